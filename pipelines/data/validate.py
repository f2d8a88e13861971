"""Batch validation: a Great Expectations suite over the manifest plus per-image facts.

``validate_batch`` reads a batch's manifest, checks its arrow schema, computes per-image facts into
the frame (the file exists and decodes, its hash and size, vote counts, box geometry, pHash
near-duplicates across the train/val and test splits, ...) and validates the frame with the suite
kept in ``pipelines/data/expectations/manifest_suite.json``. Every number the suite needs (side limits,
prevalence bounds, vocabularies) is passed at validate time as a GE suite parameter, so params.yaml
stays the one source. A failing batch is moved to ``data/quarantine/<ID>/`` with
``validation_result.json`` (each failed expectation and its offending listing ids) and GE's HTML
data docs under ``data_docs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image, ImageFile

from pipelines.data import manifest as mf
from pipelines.params import Params, load_params
from pipelines.data.phash import near_duplicates, phash_file
from pipelines.data.splits import assign_splits
from pipelines.data.synth import catalog

SUITE_PATH = Path(__file__).resolve().parent / "expectations" / "manifest_suite.json"
RESULT_NAME = "validation_result.json"
DOCS_DIR = "data_docs"
MAX_IDS = 50          # offending listing ids kept per failure (the total is given beside them)
MAX_VALUES = 10       # unexpected values kept per failure
BOX_FIXED = set(mf.BOX_LABELS_FIXED)


@dataclass
class ValidationOutcome:
    ok: bool
    batch_id: str
    n_rows: int
    failures: list[dict] = field(default_factory=list)
    result_path: Path | None = None     # validation_result.json (written only for a quarantined batch)
    docs_path: Path | None = None       # GE data docs index.html (idem)
    location: Path | None = None        # where the batch directory is now


# ---------------------------------------------------------------- schema

def _failure(expectation: str, column: str | None, description: str, ids=(), n=0, values=(), **extra) -> dict:
    ids = list(ids)
    return {"expectation": expectation, "column": column, "description": description,
            "offending_listing_ids": ids[:MAX_IDS], "n_offending": int(n or len(ids)),
            "unexpected_values": _jsonable(list(values)[:MAX_VALUES]), **extra}


def _schema_failures(batch_dir: Path) -> list[dict]:
    """Missing columns and columns whose arrow type differs from pipelines/data/manifest.py."""
    schema = pq.read_schema(batch_dir / mf.MANIFEST_NAME)
    out = []
    missing = [c for c in mf.COLUMNS if c not in schema.names]
    if missing:
        out.append(_failure("expect_table_columns_to_match_set", None,
                            f"the manifest lacks required columns: {', '.join(missing)}", values=missing))
    for name in mf.COLUMNS:
        if name in schema.names and schema.field(name).type != mf.SCHEMA.field(name).type:
            got, want = schema.field(name).type, mf.SCHEMA.field(name).type
            out.append(_failure("expect_column_values_to_be_of_type", name,
                                f"column {name} has type {got}, expected {want}", values=[str(got)]))
    return out


# ---------------------------------------------------------------- per-image facts

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))


def _image_facts(batch_dir: Path, rel: object) -> dict:
    """Facts about one image file; a fact is None (not judged) when what it needs is missing."""
    facts = {"file_found": None, "decodes": None, "decoded_width": None, "decoded_height": None,
             "file_sha256": None, "file_bytes": None, "phash": None}
    if not isinstance(rel, str) or not rel:
        return facts  # the missing value itself is what fails
    path = (batch_dir / rel).resolve()
    if not path.is_relative_to(batch_dir.resolve()) or not path.is_file():
        return {**facts, "file_found": False}
    data = path.read_bytes()
    facts.update(file_found=True, decodes=False, file_sha256=hashlib.sha256(data).hexdigest(), file_bytes=len(data))
    try:
        with Image.open(path) as im:
            im.load()
            facts.update(decodes=True, decoded_width=im.width, decoded_height=im.height)
    except Exception:  # noqa: BLE001 - any decoder error means the photo is unusable
        return facts
    h = phash_file(path)
    facts["phash"] = h
    return facts


def _vote_facts(votes, score) -> dict:
    if _missing(votes):
        return {"vote_count": None, "votes_in_scale": None, "blur_score_error": np.nan, "votes_contradictory": None}
    vs = list(votes)
    ok_scale = all(v is not None and int(v) in (0, 1, 2) for v in vs)
    total = sum(int(v) for v in vs if v is not None)
    err = np.nan if _missing(score) else abs(float(score) - total / 6)
    return {"vote_count": len(vs), "votes_in_scale": ok_scale, "blur_score_error": err,
            "votes_contradictory": bool(0 in vs and 2 in vs)}


def _box_facts(boxes, prohibited_labels: set[str]) -> dict:
    if _missing(boxes):
        return {"box_labels_known": None, "boxes_inside_image": None}
    labels_ok, inside = True, True
    for b in boxes:
        b = b or {}
        labels_ok &= b.get("label") in BOX_FIXED or b.get("label") in prohibited_labels
        c = [b.get(k) for k in ("x0", "y0", "x1", "y1")]
        if any(v is None or not np.isfinite(v) for v in c):
            inside = False
            continue
        x0, y0, x1, y1 = c
        inside &= 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    return {"box_labels_known": bool(labels_ok), "boxes_inside_image": bool(inside)}


def _prohibited_facts(entries, known: set[str]) -> dict:
    if _missing(entries):
        return {"prohibited_known": None, "has_prohibited": None}
    entries = list(entries)
    return {"prohibited_known": all(e in known for e in entries), "has_prohibited": len(entries) > 0}


def _near_duplicate_facts(df: pd.DataFrame, params: Params, repo: Path) -> tuple[pd.Series, pd.Series]:
    """The split of each row, and for each train/val row the test photo(s) it nearly duplicates (else None)."""
    frozen_path = repo / "data" / "test_split.json"
    split = assign_splits(df["listing_id"], params, first_batch=not frozen_path.exists())
    hashes = df["phash"]
    has = hashes.notna()
    max_d = params.validation.phash_max_distance
    found: dict[int, list[str]] = {}

    def record(rows: pd.Index, ref_ids: list[str], ref_hashes: list[str], what: str):
        for i, j, d in near_duplicates(list(hashes[rows]), ref_hashes, max_d):
            if df.at[rows[i], "listing_id"] != ref_ids[j]:  # a frozen photo re-validated is not its own duplicate
                found.setdefault(rows[i], []).append(f"{what} {ref_ids[j]} (pHash distance {d})")

    trainval = df.index[has & (split != "test")]
    test = df.index[has & (split == "test")]
    record(trainval, list(df.loc[test, "listing_id"]), list(hashes[test]), "test photo")
    if frozen_path.exists():
        frozen = json.loads(frozen_path.read_text())
        pairs = [(str(i), str(h)) for i, h in zip(frozen.get("listing_ids", []), frozen.get("phash", []))
                 if h is not None]
        record(trainval, [i for i, _ in pairs], [h for _, h in pairs],
               f"frozen test photo of batch {frozen.get('batch')}:")
    dup = pd.Series([None] * len(df), index=df.index, dtype=object)
    for row, pairs in found.items():
        dup[row] = f"{split[row]} photo {df.at[row, 'listing_id']} duplicates " + "; ".join(pairs[:3])
    return split, dup


def compute_facts(df: pd.DataFrame, batch_dir: Path, params: Params, repo: Path) -> pd.DataFrame:
    """The manifest plus one column per per-image fact; list columns become readable strings."""
    prohibited = set(params.prohibited.categories)
    box_labels = {f"prohibited:{c}" for c in prohibited}
    was = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail, whatever other code set
    try:
        rows = [{**_image_facts(batch_dir, r.image), **_vote_facts(r.blur_votes, r.blur_score),
                 **_box_facts(r.boxes, box_labels), **_prohibited_facts(r.prohibited, prohibited)}
                for r in df.itertuples(index=False)]
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = was
    facts = pd.DataFrame(rows, index=df.index)
    for col in ("decoded_width", "decoded_height", "file_bytes"):
        facts[col] = facts[col].astype("Int64")
    out = pd.concat([df, facts], axis=1)
    out["assigned_split"], out["near_duplicate_of"] = _near_duplicate_facts(out, params, repo)
    for col in ("blur_votes", "prohibited", "boxes"):  # readable in the data docs
        out[col] = [None if v is None else json.dumps(_jsonable(list(v))) for v in out[col]]
    return out


# ---------------------------------------------------------------- the GE run

def _load_suite_json() -> dict:
    return json.loads(SUITE_PATH.read_text())


SELECTION_FILE = "selection.json"   # written by active_learning.import_labels


def suite_parameters(params: Params, suite: dict | None = None) -> dict:
    """Values of every $PARAMETER of the suite, from params.yaml and the code's vocabularies."""
    suite = suite or _load_suite_json()
    values = {"manifest_columns": list(mf.COLUMNS), "min_side": params.validation.min_side,
              "max_side": params.validation.max_side, "sku_ids": [*catalog.sku_ids(), "none"],
              "categories": [*catalog.PRODUCT_TYPES, "none"], "manipulation_types": list(mf.MANIPULATION_TYPES),
              "blur_kinds": list(mf.BLUR_KINDS)}
    covered = {e.get("meta", {}).get("prevalence") for e in suite["expectations"]} - {None}
    if set(params.validation.prevalence) - covered:
        raise ValueError(f"validation.prevalence keys without an expectation in {SUITE_PATH.name}: "
                         f"{sorted(set(params.validation.prevalence) - covered)}")
    for key in covered:
        if key not in params.validation.prevalence:
            raise ValueError(f"{SUITE_PATH.name} checks the prevalence of {key!r} but params.yaml "
                             f"validation.prevalence has no bounds for it")
        values[f"prevalence_{key}_min"], values[f"prevalence_{key}_max"] = params.validation.prevalence[key]
    return values


def _run_ge(frame: pd.DataFrame, suite_json: dict, parameters: dict, workdir: Path):
    """Validate ``frame`` in a file context under ``workdir``; returns (result, data docs site dir)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(workdir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add(gx.ExpectationSuite(**suite_json))
    batch_def = (context.data_sources.add_pandas("incoming").add_dataframe_asset("manifest")
                 .add_batch_definition_whole_dataframe("whole_batch"))
    vdef = context.validation_definitions.add(gx.ValidationDefinition(name="batch", data=batch_def, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="validate_batch", validation_definitions=[vdef],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["listing_id"]}))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
    site = workdir / "gx" / "uncommitted" / "data_docs" / "local_site"
    return next(iter(result.run_results.values())), site


def _ge_failures(ge_result, frame: pd.DataFrame, suite_json: dict) -> list[dict]:
    """The failed expectations, in the order of the suite file."""
    order = {e.get("meta", {}).get("problem"): i for i, e in enumerate(suite_json["expectations"])}
    failed = [r for r in ge_result.results if not r.success]
    failed.sort(key=lambda r: order.get((r.expectation_config.meta or {}).get("problem"), len(order)))
    return [_ge_failure(r, frame) for r in failed]


def _ge_failure(res, frame: pd.DataFrame) -> dict:
    cfg, r = res.expectation_config, res.result or {}
    kw = cfg.kwargs
    problem = (cfg.meta or {}).get("problem") or cfg.description or cfg.type
    column = kw.get("column") or kw.get("column_A")
    ids = [row.get("listing_id") for row in r.get("unexpected_index_list") or []]
    n = r.get("unexpected_count", len(ids))
    values = r.get("unexpected_list") or r.get("partial_unexpected_list") or []
    if res.exception_info and res.exception_info.get("raised_exception"):
        desc = f"{problem}: the check raised {res.exception_info.get('exception_message')}"
    elif cfg.type == "expect_column_mean_to_be_between" and r.get("observed_value") is not None:
        desc = f"{problem}: observed {float(r['observed_value']):.3f}, allowed [{kw['min_value']}, {kw['max_value']}]"
    elif cfg.type == "expect_table_columns_to_match_set":
        missing = (r.get("details") or {}).get("mismatched", {}).get("missing", [])
        desc, values = f"{problem}: {', '.join(missing)}", missing
    elif column == "near_duplicate_of":  # name the duplicate pairs themselves
        desc = f"{problem}: {n} of {len(frame)} photos; " + "; ".join(map(str, values[:5]))
    else:
        desc = f"{problem}: {n} of {len(frame)} photos"
    return _failure(cfg.type, column, desc, ids, n, values, observed_value=_jsonable(r.get("observed_value")),
                    kwargs=_jsonable({k: v for k, v in kw.items() if k != "batch_id"}))


# ---------------------------------------------------------------- quarantine and the public API

def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)


def _quarantine(batch_dir: Path, repo: Path, batch_id: str) -> Path:
    root = repo / "data" / "quarantine"
    if batch_dir.resolve().parent == root.resolve():  # re-validating a quarantined batch: stay put
        return batch_dir
    root.mkdir(parents=True, exist_ok=True)
    dest, k = root / batch_id, 2
    while dest.exists():
        dest, k = root / f"{batch_id}.{k}", k + 1
    shutil.move(str(batch_dir), str(dest))
    return dest


def _check_manifest(batch_dir: Path) -> tuple[int, list[dict]]:
    """(rows, failures) of the manifest file itself: present, readable, the declared schema."""
    path = batch_dir / mf.MANIFEST_NAME
    if not path.is_file():
        return 0, [_failure("manifest_exists", None, f"the batch has no {mf.MANIFEST_NAME}")]
    try:
        return pq.read_metadata(path).num_rows, _schema_failures(batch_dir)
    except Exception as exc:  # noqa: BLE001 - an unreadable parquet is a failed batch, not a crash
        return 0, [_failure("manifest_readable", None, f"{mf.MANIFEST_NAME} cannot be read: {exc}")]


def validate_batch(batch_dir: str | Path, *, repo: str | Path | None = None, params: Params | None = None,
                   quarantine: bool = True) -> ValidationOutcome:
    """Validate one incoming batch; a failing batch is quarantined with its report (see module doc)."""
    batch_dir, repo = Path(batch_dir), Path(repo) if repo is not None else Path.cwd()
    params = params or load_params()
    batch_id = batch_dir.name
    if not batch_dir.is_dir():
        raise FileNotFoundError(f"no batch directory {batch_dir}")
    suite_json = _load_suite_json()
    parameters = suite_parameters(params, suite_json)
    if (batch_dir / SELECTION_FILE).exists():
        # Answers to an active-learning queue: photos chosen because the model hesitated on them are enriched in
        # the rare labels by design, so the prevalence bounds (set for batches drawn at random) do not apply.
        parameters.update({k: (0.0 if k.endswith("_min") else 1.0) for k in parameters if k.startswith("prevalence_")})
    n_rows, failures = _check_manifest(batch_dir)
    ge_result = None
    with tempfile.TemporaryDirectory(prefix="reviewops-ge-") as tmp:
        site = None
        if not failures:
            raw = mf.read_manifest(batch_dir)
            n_rows = len(raw)
            frame = compute_facts(raw.reset_index(drop=True), batch_dir, params, repo)
            ge_result, site = _run_ge(frame, suite_json, parameters, Path(tmp))
            failures = _ge_failures(ge_result, frame, suite_json)
        outcome = ValidationOutcome(ok=not failures, batch_id=batch_id, n_rows=n_rows, failures=failures,
                                    location=batch_dir)
        if failures and quarantine:
            outcome.location = _quarantine(batch_dir, repo, batch_id)
            if site is not None and site.exists():
                shutil.copytree(site, outcome.location / DOCS_DIR, dirs_exist_ok=True)
                outcome.docs_path = outcome.location / DOCS_DIR / "index.html"
            outcome.result_path = _write_result(outcome, batch_dir, params, ge_result)
    return outcome


def _write_result(outcome: ValidationOutcome, source: Path, params: Params, ge_result) -> Path:
    stats = _jsonable(dict(ge_result.statistics)) if ge_result is not None else None
    doc = {"batch_id": outcome.batch_id, "ok": outcome.ok, "n_rows": outcome.n_rows,
           "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "source": str(source), "location": str(outcome.location), "params_digest": params.digest(),
           "suite": SUITE_PATH.name, "statistics": stats,
           "data_docs": str(outcome.docs_path.relative_to(outcome.location)) if outcome.docs_path else None,
           "failures": outcome.failures}
    path = outcome.location / RESULT_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    return path


def format_outcome(outcome: ValidationOutcome) -> str:
    """A short human summary for the CLI."""
    if outcome.ok:
        return f"batch {outcome.batch_id}: valid ({outcome.n_rows} photos)"
    lines = [f"batch {outcome.batch_id}: INVALID ({outcome.n_rows} photos, "
             f"{len(outcome.failures)} failed expectation(s))"]
    for f in outcome.failures:
        col = f" [{f['column']}]" if f.get("column") else ""
        ids = f["offending_listing_ids"]
        more = f" (+{f['n_offending'] - len(ids)} more)" if f["n_offending"] > len(ids) else ""
        shown = f"\n      listings: {', '.join(map(str, ids[:8]))}{' ...' if len(ids) > 8 else ''}{more}" if ids else ""
        lines.append(f"  - {f['expectation']}{col}: {f['description']}{shown}")
    if outcome.location is not None and outcome.result_path is not None:
        lines.append(f"quarantined at {outcome.location}")
        lines.append(f"report: {outcome.result_path}")
    if outcome.docs_path is not None:
        lines.append(f"data docs: {outcome.docs_path}")
    return "\n".join(lines)
