"""The drift reference: the production models' outputs on the validation split, stored at promotion.

The reference is computed through the service's own code path (``pipelines.serve.models``: the ONNX
bundles of every production model, ``decide`` and ``log_scores``), photo by photo as the service
would answer it with the claimed SKU and the category of the listing, so reference rows and
prediction-log rows are the same numbers for the same photo. It is stored as

    <monitoring.reference>/reference.parquet   one row per validation photo: the drift features
    <monitoring.reference>/reference.json      models (family -> tag), source, rows, categories, time

``reviewops gate`` rebuilds it after any promotion; ``reviewops reference`` does it by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.params import Params, load_params

REFERENCE_FILE = "reference.parquet"
META_FILE = "reference.json"
NUMERIC = ("blur_score", "sku_similarity", "manipulation_score", "sticker_missing_score", "dirt_score",
           "centring_offset")
PROHIBITED_PREFIX = "prohibited_"


class ReferenceError(RuntimeError):
    """No usable reference (never stored, unreadable, or nothing to compute it from)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _under(root: Path, path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(root).resolve() / path


def reference_dir(root: Path, params: Params) -> Path:
    return _under(root, params.monitoring.reference)


def _none(value: Any) -> Any:
    """'none' and NaN in a manifest mean 'not given' to the service."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "none" or value == "":
        return None
    return str(value)


def review_records(models, versions: Mapping[str, str], photos: pd.DataFrame, *, batch_size: int = 32,
                   request_prefix: str = "ref-", ts: Sequence[dt.datetime] | None = None,
                   archive: str | Path | None = None, progress: bool = False) -> list[dict]:
    """Prediction-log records for the photos of a manifest, answered as the service answers them.

    ``models`` is a loaded ``pipelines.serve.models.ReviewerModels``; ``photos`` has ``path`` (the
    JPEG), ``listing_id`` and optionally ``claimed_sku`` and ``category`` ('none' = not sent).
    Each record has exactly the keys the service appends to the prediction log; with ``archive``
    the photo is kept there by SHA-256 as the service does, and ``image_path`` names it.
    """
    from pipelines.serve.images import load_resized
    from pipelines.serve.models import INPUT_SIZE, decide, log_scores

    rows = photos.reset_index(drop=True)
    records: list[dict] = []
    starts = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="review photos", unit="batch")
    for start in starts:
        chunk = rows.iloc[start:start + batch_size]
        raws = models.infer(load_resized(list(chunk["path"]), INPUT_SIZE, threads=2))
        for i, (raw, (_, row)) in enumerate(zip(raws, chunk.iterrows())):
            answer = decide(raw, models.metas, sku_id=_none(row.get("claimed_sku")), category=_none(row.get("category")))
            record = {"request_id": f"{request_prefix}{row['listing_id']}", "listing_id": str(row["listing_id"]),
                      "decision": answer["decision"], "reasons": answer["reasons"], "models": dict(versions),
                      "checks": answer["checks"], **log_scores(raw, answer)}
            if ts is not None:
                record["ts"] = ts[start + i]
            if archive is not None:
                from pipelines.serve.photo_input import archive_photo

                record["image_path"] = str(archive_photo(Path(row["path"]).read_bytes(), Path(archive)))
            records.append(record)
    return records


def features(frame: pd.DataFrame, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """The drift features of prediction-log rows (``PredictionLog.read`` or a list of records as a frame).

    Numeric scores (NaN where a family did not answer), one ``prohibited_<category>`` column per
    category (``categories``, default: every category seen) and the ``decision``.
    """
    out = pd.DataFrame(index=frame.index)
    for name in NUMERIC:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float) if name in frame else np.nan
    probs = frame["prohibited"] if "prohibited" in frame else pd.Series([None] * len(frame), index=frame.index)
    if categories is None:
        categories = sorted({k for d in probs if isinstance(d, dict) for k in d})
    for cat in categories:
        out[f"{PROHIBITED_PREFIX}{cat}"] = [float(d[cat]) if isinstance(d, dict) and d.get(cat) is not None
                                            else np.nan for d in probs]
    out["decision"] = frame["decision"].astype(str) if "decision" in frame else "unknown"
    return out.reset_index(drop=True)


def _validation_photos(root: Path) -> pd.DataFrame:
    from pipelines.data.dataset import split_frame, versioned_manifest

    df = split_frame(versioned_manifest(root), "val")
    if df.empty:
        raise ReferenceError(f"no validation photos in the versioned data of {root}: version a batch first "
                             "(reviewops version)")
    return df


def _batch_photos(batch_dir: Path) -> pd.DataFrame:
    from pipelines.data.manifest import read_manifest

    df = read_manifest(batch_dir)
    df["path"] = [str(Path(batch_dir) / rel) for rel in df["image"]]
    return df


def build_reference(root: str | Path, params: Params | None = None, *, bundles: Mapping[str, str | Path] | None = None,
                    versions: Mapping[str, str] | None = None, batch_dir: str | Path | None = None,
                    threads: int | None = None, progress: bool = False) -> dict:
    """Compute and store the reference; returns its metadata.

    Models: ``bundles`` (family -> bundle directory) with their ``versions`` (family -> tag), by
    default every production model of the registry (call ``pipelines.release.registry.use_store`` first).
    Photos: the validation split of the versioned data, or every photo of ``batch_dir``.
    """
    from pipelines.serve.models import ReviewerModels

    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    if bundles is None:
        from pipelines.release import registry

        versions = registry.production()
        if not versions:
            raise ReferenceError("no production model in the registry: run reviewops gate first")
        bundles = registry.production_bundles()
    if versions is None:
        versions = {family: f"{Path(path).name}" for family, path in bundles.items()}
    photos = _batch_photos(Path(batch_dir)) if batch_dir is not None else _validation_photos(root)
    source = (f"batch {Path(batch_dir).resolve()}" if batch_dir is not None
              else f"validation split of the versioned data ({', '.join(sorted(set(photos['batch'])))})")
    models = ReviewerModels(bundles, threads=threads or params.train.threads)
    records = review_records(models, versions, photos, progress=progress)
    frame = features(pd.DataFrame.from_records(records))
    frame.insert(0, "listing_id", [r["listing_id"] for r in records])
    frame["reasons"] = [json.dumps(r["reasons"]) for r in records]
    categories = sorted(c[len(PROHIBITED_PREFIX):] for c in frame.columns if c.startswith(PROHIBITED_PREFIX))
    meta = {"created": _now().isoformat(timespec="seconds"), "models": dict(sorted(versions.items())),
            "source": source, "rows": len(frame), "categories": categories,
            "auto_pass_share": round(float((frame["decision"] == "auto_pass").mean()), 4) if len(frame) else None,
            "means": {c: round(float(frame[c].mean()), 6) for c in NUMERIC if frame[c].notna().any()}}
    out = reference_dir(root, params)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{REFERENCE_FILE}.tmp-{os.getpid()}"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out / REFERENCE_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def load_reference(root: str | Path, params: Params | None = None) -> tuple[pd.DataFrame, dict]:
    """The stored reference frame and its metadata; ReferenceError (saying what to run) when there is none."""
    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    where = reference_dir(root, params)
    if not (where / REFERENCE_FILE).exists() or not (where / META_FILE).exists():
        raise ReferenceError(f"no drift reference in {where}: run `reviewops reference` (or `reviewops gate`, "
                             "which stores it after a promotion)")
    return pd.read_parquet(where / REFERENCE_FILE), json.loads((where / META_FILE).read_text())


def after_gate(root: str | Path, results: Sequence[Any], params: Params | None = None) -> dict | None:
    """The gate's hook: rebuild the reference when any family was promoted (None when none was)."""
    if not any(getattr(r, "verdict", None) == "promoted" for r in results):
        return None
    return build_reference(root, params)


def summary(meta: dict, where: Path | None = None) -> str:
    lines = [f"reference: {meta['rows']} rows from the {meta['source']}"
             + (f" -> {where}" if where is not None else ""),
             f"  models: {', '.join(f'{f}={t}' for f, t in meta['models'].items())}",
             f"  auto-pass share {meta.get('auto_pass_share')}; means: "
             + ", ".join(f"{k} {v:.3f}" for k, v in meta.get("means", {}).items())]
    return "\n".join(lines)
