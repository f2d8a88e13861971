"""The task-level functions the Airflow DAGs call for ingest, retrain, release and deploy: one per task, idempotent.

Every function takes the project ``root`` (default: ``$REVIEWOPS_ROOT``, else this checkout) and
returns a small JSON-able dict (it becomes the task's XCom). Work that must not run side by side
in one work tree (DVC, git, the model store) runs under ``pipelines.data.version.repo_lock``; commands
that import torch or bentoml run as ``dvc`` / ``reviewops`` subprocesses with the project's
``BENTOML_HOME`` (``pipelines.app.project``), so a task process never mixes two model stores and frees
its memory on exit. The monitoring DAGs' tasks are in ``pipelines.app.monitors``.

Errors: :class:`PermanentError` (and its subclasses) means retrying cannot help: a batch that
failed validation, a candidate the gate refused, a missing input. The DAGs fail such a task at
once (an ``ExceptionRetryPolicy`` in ``dags/_common.py``); anything else is retried with backoff.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from pipelines.app.project import BIN, bentoml_home, lock, project_root, read_json, read_params, run
from pipelines.train import families
from pipelines.train.families import FAMILIES

INCOMING_DIR = Path("data") / "incoming"         # as pipelines.data.dataset (not imported here: DAG files parse
BATCHES_DIR = Path("data") / "batches"           # this module, and pandas need not load at every parse)
QUARANTINE_DIR = Path("data") / "quarantine"
DEPLOY_STATE = Path(".reviewops") / "deploy"
BUILD_RECORD = Path("reports") / "build.json"
GALLERY_DEPLOY_RECORD = Path("reports") / "gallery_deploy.json"   # as pipelines.release.gallery.RECORD
POLICY_DEPLOY_RECORD = Path("reports") / "policy_deploy.json"     # as pipelines.release.policy.RECORD
GATE_REPORTS = Path("reports") / "gate"
TRAIN_LOCK_TIMEOUT_S = 6 * 3600.0     # a task waiting for another's training (the demo's longest family: ~18 min)


class PermanentError(RuntimeError):
    """Retrying cannot help: the input or the verdict is wrong, not the moment."""


class BatchRejected(PermanentError):
    """The batch failed validation and was quarantined; nothing was versioned."""


class BatchNotFound(PermanentError):
    """No such batch in data/incoming/ (nor versioned, nor quarantined)."""


class GateRefused(PermanentError):
    """The gate refused at least one candidate; production is unchanged for it."""


class NothingToDeploy(PermanentError):
    """No Bento has been built yet, or the one asked for is not in the store."""


# ---------------------------------------------------------------- ingest: find, validate, version

def find_batches(root: str | Path | None = None, batch: str | None = None) -> list[str]:
    """The batch ids to ingest: ``batch`` alone, or every complete batch directory in ``data/incoming/``.

    A directory counts once its ``manifest.parquet`` is there (producers write it last, or rename the
    finished directory into place as ``reviewops generate`` does); hidden directories are in-progress
    writes. A named batch that is already versioned is returned too (ingesting it again changes nothing).
    """
    from pipelines.data.manifest import MANIFEST_NAME

    root = project_root(root)
    incoming = root / INCOMING_DIR
    if batch:
        if (incoming / batch).is_dir() or (root / BATCHES_DIR / batch).is_dir():
            return [batch]
        quarantined = root / QUARANTINE_DIR / batch
        if quarantined.is_dir():
            raise BatchRejected(f"batch {batch} was quarantined: see {quarantined / 'validation_result.json'}")
        raise BatchNotFound(f"no batch {batch!r} in {incoming}")
    if not incoming.is_dir():
        return []
    found = sorted(p.name for p in incoming.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())
    waiting = sorted(p.name for p in incoming.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and not (p / MANIFEST_NAME).is_file())
    if waiting:
        print(f"waiting for the manifest of {', '.join(waiting)} (left for a later run)", flush=True)
    print(f"batches to ingest: {', '.join(found) or 'none'}", flush=True)
    return found


def validate(root: str | Path | None = None, batch: str = "") -> dict:
    """Great Expectations validation of ``data/incoming/<batch>``; a failing batch is quarantined.

    Raises BatchRejected (with every failed expectation) for a failing batch, and again on a retry
    (the batch is then in quarantine). A batch that is already versioned passes (a retried run).
    """
    from pipelines.data.validate import format_outcome, validate_batch

    root = project_root(root)
    src = root / INCOMING_DIR / batch
    if not src.is_dir():
        if (root / BATCHES_DIR / batch).is_dir():
            print(f"batch {batch} is already versioned: nothing to validate", flush=True)
            return {"batch": batch, "valid": True, "already_versioned": True}
        find_batches(root, batch)             # raises BatchRejected (quarantined) or BatchNotFound
    outcome = validate_batch(src, repo=root, params=read_params(root))
    report = format_outcome(outcome)
    print(report, flush=True)
    if not outcome.ok:
        raise BatchRejected(report)
    return {"batch": batch, "valid": True, "photos": outcome.n_rows, "already_versioned": False}


def version(root: str | Path | None = None, batch: str = "") -> dict:
    """DVC add, git commit and push of a validated batch; a batch already versioned changes nothing."""
    from pipelines.data.version import format_outcome, version_batch

    root = project_root(root)
    outcome = version_batch(root / INCOMING_DIR / batch, repo=root, params=read_params(root))
    print(format_outcome(outcome), flush=True)
    seeded = gallery_seed(root)       # also on a retried task: the seed finds what a failed one left to do
    return {"batch": batch, "new": not outcome.already_versioned, "photos": outcome.n_rows,
            "splits": outcome.splits, "commit": outcome.commit, "pushed": outcome.pushed,
            "gallery": {k: seeded[k] for k in ("changed", "version", "n_skus", "n_photos", "commit")}}


def gallery_seed(root: str | Path | None = None) -> dict:
    """Enrol the catalogue SKUs of the versioned train split that the SKU gallery lacks (dvc add, git commit)."""
    from pipelines.data.gallery import seed

    root = project_root(root)
    result = seed(root, read_params(root))
    print(result["message"] + ("" if result["changed"] else ": nothing changed"), flush=True)
    return result


def new_batches(results: Iterable[dict]) -> list[str]:
    """The batches that a set of ``version`` results versioned for the first time."""
    return sorted(r["batch"] for r in results if r and r.get("new"))


# ---------------------------------------------------------------- retrain: train, evaluate (dvc repro per family)

def _dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc"), *args]


def family_stages(family: str, kind: str) -> list[str]:
    """The dvc.yaml targets of ``family``: ``train_<f>`` (for prohibited its shared neck, ``train_prohibited_neck``,
    and the foreach group of its categories) or ``evaluate@<f>``."""
    try:
        families.get(family)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    if kind != "train":
        return [f"evaluate@{family}"]
    return ["train_prohibited_neck", "train_prohibited"] if family == "prohibited" else [f"train_{family}"]


def _changed(root: Path, stages: list[str]) -> list[str]:
    """The stages of ``stages`` (names or foreach groups) whose deps, params or outs changed since dvc.lock."""
    code, out = run(_dvc("status", "--json", *stages), root, what="dvc status", ok=range(256), echo=False)
    if code != 0:
        if "does not exist as an output or a stage name" in out:
            raise PermanentError(f"dvc.yaml of {root} has no stage {' '.join(stages)}:\n{out[-1000:]}")
        raise RuntimeError(f"dvc status {' '.join(stages)} failed (exit {code}) in {root}:\n{out[-3000:]}")
    start = out.find("{")
    status = json.loads(out[start:]) if start >= 0 else {}
    return sorted(s for s in status if not s.endswith(".dvc"))


def _repro(root: Path, family: str, kind: str) -> dict:
    start = time.monotonic()
    with lock(root, TRAIN_LOCK_TIMEOUT_S):
        stages = family_stages(family, kind)
        changed = _changed(root, stages)
        if changed:
            print(f"{family}: {kind} {len(changed)} changed stage(s): {', '.join(changed)}", flush=True)
            run(_dvc("repro", *changed), root, what=f"dvc repro {' '.join(changed)}")
            left = _changed(root, stages)
            if left:
                raise RuntimeError(f"dvc repro left {', '.join(left)} out of date")
        else:
            print(f"{family}: {kind} stage(s) {' '.join(stages)} up to date with dvc.lock: nothing to run", flush=True)
    return {"family": family, "ran": changed, "seconds": round(time.monotonic() - start, 1)}


def train(root: str | Path | None = None, family: str = "") -> dict:
    """``dvc repro`` of the family's train stage(s) that changed; unchanged ones are not retrained."""
    return _repro(project_root(root), family, "train")


def evaluate(root: str | Path | None = None, family: str = "") -> dict:
    """``dvc repro evaluate@<family>`` when its model, data or code changed: metrics/ and plots/."""
    return _repro(project_root(root), family, "evaluate")


REVIEWER_STAGES = ["reviewer", "real_photos"]


def reviewer(root: str | Path | None = None) -> dict:
    """``dvc repro reviewer real_photos`` when a candidate, its thresholds or the decision code changed: the whole
    reviewer on validation and test (metrics/reviewer.json) and the candidates on the real-photo checks
    (metrics/real_photos.json)."""
    root = project_root(root)
    start = time.monotonic()
    with lock(root, TRAIN_LOCK_TIMEOUT_S):
        changed = _changed(root, REVIEWER_STAGES)
        if changed:
            run(_dvc("repro", *REVIEWER_STAGES), root, what="dvc repro " + " ".join(REVIEWER_STAGES))
        else:
            print("reviewer: up to date with dvc.lock: nothing to run", flush=True)
    metrics = read_json(root / "metrics" / "reviewer.json") or {}
    real = read_json(root / "metrics" / "real_photos.json") or {}
    test = metrics.get("test") or {}
    return {"ran": changed, "seconds": round(time.monotonic() - start, 1),
            "clean_auto_pass": test.get("clean_auto_pass"), "photo_recall": test.get("photo_recall"),
            "real_photos": {"manipulation_false_alarms": (real.get("manipulation") or {}).get("false_alarm_rate"),
                            "blur_pooled_spearman": (real.get("blur") or {}).get("pooled_spearman"),
                            "unknown_sku": (real.get("sku") or {}).get("unknown_sku_share")}}


# ---------------------------------------------------------------- gate, build

def gate(root: str | Path | None = None, families: Iterable[str] | None = None) -> dict:
    """``reviewops gate``: each family's candidate is promoted (registered first), unchanged or refused.

    Returns every verdict; a refusal is reported, not raised (the promoted families still ship);
    :func:`check_verdicts` fails the run for it after the build.
    """
    root = project_root(root)
    names = list(families or FAMILIES)
    with lock(root, TRAIN_LOCK_TIMEOUT_S):     # models/ and metrics/ must not change under the gate
        code, out = run([str(BIN / "reviewops"), "gate", *names], root, what="reviewops gate", ok=(0, 1))
    verdicts, reports = {}, {}
    for family in names:
        path = root / GATE_REPORTS / f"{family}.json"
        report = read_json(path)
        if report is None:
            raise RuntimeError(f"reviewops gate exited {code} without a report for {family} ({path}):\n{out[-2000:]}")
        verdicts[family] = report["verdict"]
        reports[family] = {"verdict": report["verdict"], "production": report.get("production_after"),
                           "reasons": report.get("reasons", []), "report": str(path.with_suffix(".md"))}
    by = {v: sorted(f for f, x in verdicts.items() if x == v) for v in ("promoted", "unchanged", "refused")}
    return {"verdicts": verdicts, **by, "families": reports}


def reference(root: str | Path | None = None, gated: dict | None = None) -> dict:
    """``reviewops reference`` after the gate promoted a family: the new production models' drift reference.

    Returns ``{"stored": False}`` when nothing was promoted (the reference still matches production).
    """
    root = project_root(root)
    if gated is not None and not gated.get("promoted"):
        return {"stored": False, "message": "no family promoted: the drift reference still matches production"}
    run([str(BIN / "reviewops"), "reference"], root, what="reviewops reference")
    return {"stored": True, "reference": read_json(root / read_params(root).monitoring.reference / "reference.json")}


def check_verdicts(result: dict) -> dict:
    """Raise GateRefused when the gate refused a candidate (after the promoted ones were built)."""
    refused = result.get("refused") or []
    if refused:
        detail = "; ".join(f"{f}: {' | '.join(result['families'][f]['reasons'])} (report "
                           f"{result['families'][f]['report']})" for f in refused)
        raise GateRefused(f"the gate refused {', '.join(refused)}; production is unchanged for them. {detail}")
    return {"refused": [], "promoted": result.get("promoted", []), "unchanged": result.get("unchanged", [])}


def production(root: str | Path | None = None) -> dict[str, str]:
    """Family -> production model tag, read from the registry's pointer file without importing bentoml."""
    # pipelines.release.registry keeps it at <BENTOML_HOME>/reviewops/production.json
    return read_json(bentoml_home(project_root(root)) / "reviewops" / "production.json") or {}


def _bento_exists(root: Path, tag: str) -> bool:
    from pipelines.deploy.bluegreen import DeployError, resolve_bento

    try:
        resolve_bento(tag, {"BENTOML_HOME": str(bentoml_home(root))})
    except DeployError:
        return False
    return True


def build(root: str | Path | None = None) -> dict:
    """``reviewops build`` when production differs from the last built Bento (or it is gone).

    ``built`` is False when the newest Bento already holds every production model, or when a family
    has no production model yet (nothing can be served); the DAG then emits no "new Bento" event.
    """
    root = project_root(root)
    prod = production(root)
    missing = [f for f in FAMILIES if f not in prod]
    if missing:
        msg = f"no production model for {', '.join(missing)}: nothing to build"
        print(msg, flush=True)
        return {"built": False, "bento": None, "message": msg}
    last = read_json(root / BUILD_RECORD)
    if last and last.get("models") == prod and last.get("bento") and _bento_exists(root, last["bento"]):
        msg = f"{last['bento']} already holds every production model: nothing to build"
        print(msg, flush=True)
        return {"built": False, "bento": last["bento"], "models": prod, "message": msg}
    with lock(root, TRAIN_LOCK_TIMEOUT_S):
        run([str(BIN / "reviewops"), "build"], root, what="reviewops build")
    record = read_json(root / BUILD_RECORD) or {}
    if record.get("models") != prod:
        raise RuntimeError(f"{root / BUILD_RECORD} does not record the production models after the build")
    return {"built": True, "bento": record["bento"], "models": prod, "golden_photos": record.get("golden_photos"),
            "message": f"built {record['bento']}"}


# ---------------------------------------------------------------- deploy, verify

def serving_port(root: Path, port: int | None = None) -> int:
    return int(port or read_params(root).serving.port)


def deploy(root: str | Path | None = None, bento: str | None = None, port: int | None = None) -> dict:
    """Blue/green deploy (``pipelines.deploy.bluegreen``) of ``bento`` (default: the last built one) on loopback.

    The new instance must be ready and answer the Bento's golden smoke set before traffic switches;
    on failure the old instance keeps serving and DeployError is raised. Deploying the active Bento
    again is a no-op.
    """
    from pipelines.deploy.bluegreen import deploy as blue_green

    root = project_root(root)
    tag = bento or (read_json(root / BUILD_RECORD) or {}).get("bento")
    if not tag:
        raise NothingToDeploy(f"no Bento built yet in {root} (no {BUILD_RECORD}): run the retrain DAG first")
    if not _bento_exists(root, tag):
        raise NothingToDeploy(f"Bento {tag} is not in the store {bentoml_home(root)}")
    env = {"BENTOML_HOME": str(bentoml_home(root)), "REVIEWOPS_ROOT": str(root)}
    result = blue_green(tag, state_dir=root / DEPLOY_STATE, port=serving_port(root, port), env=env)
    print(result.get("message", f"deployed {tag}"), flush=True)
    return {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool, type(None)))}


def gallery_deploy(root: str | Path | None = None, port: int | None = None) -> dict:
    """``reviewops gallery deploy``: the current gallery embedded by the production SKU model, registered,
    promoted, built and deployed blue/green (smoke set, switch); no retraining. Returns its record."""
    root = project_root(root)
    cmd = [str(BIN / "reviewops"), "gallery", "deploy"] + (["--port", str(port)] if port else [])
    code, out = run(cmd, root, what="reviewops gallery deploy", ok=range(256))
    if code == 2:
        raise PermanentError(f"reviewops gallery deploy refused:\n{out[-2000:]}")
    if code != 0:
        raise RuntimeError(f"reviewops gallery deploy exited {code} (the previous instance keeps serving):\n{out[-3000:]}")
    record = read_json(root / GALLERY_DEPLOY_RECORD)
    if record is None:
        raise RuntimeError(f"reviewops gallery deploy wrote no {GALLERY_DEPLOY_RECORD}:\n{out[-2000:]}")
    return {k: v for k, v in record.items() if k != "deploy"} | {"deploy": record["deploy"].get("message")}


def policy_deploy(root: str | Path | None = None, check: str = "", threshold: float | None = None,
                  recall: float | None = None, reason: str = "", port: int | None = None) -> dict:
    """``reviewops policy set CHECK``: one check's threshold (given, or chosen for a ``recall`` target on validation)
    registered with the production bundle of its family, promoted, built and deployed blue/green; no retraining.
    A proposal below the check's gate floor is refused (PermanentError). Returns its record."""
    if not check or (threshold is None) == (recall is None):
        raise PermanentError("policy_deploy needs a check and one of threshold or recall")
    root = project_root(root)
    how = ["--threshold", repr(float(threshold))] if threshold is not None else ["--recall", repr(float(recall))]
    cmd = [str(BIN / "reviewops"), "policy", "set", check, *how, "--reason", reason or "policy DAG"] + (
        ["--port", str(port)] if port else [])
    started = time.time()
    code, out = run(cmd, root, what="reviewops policy set", ok=range(256))
    if code == 2:
        raise PermanentError(f"reviewops policy set refused:\n{out[-2000:]}")
    if code != 0:
        raise RuntimeError(f"reviewops policy set exited {code} (the previous instance keeps serving):\n{out[-3000:]}")
    path = root / POLICY_DEPLOY_RECORD
    record = read_json(path) if path.is_file() and path.stat().st_mtime >= started else None
    if record is None:
        raise RuntimeError(f"reviewops policy set wrote no {POLICY_DEPLOY_RECORD}:\n{out[-2000:]}")
    return {k: v for k, v in record.items() if k not in ("deploy", "effect")} | {"deploy": record["deploy"].get("message")}


def verify(root: str | Path | None = None, port: int | None = None) -> dict:
    """One golden photo through the public port (the router): HTTP 200 with a decision, from the active Bento."""
    import httpx

    from pipelines.deploy.bluegreen import SMOKE_HEADER, DeployError, default_golden, load_golden, resolve_bento, status

    root = project_root(root)
    port = serving_port(root, port)
    state = status(root / DEPLOY_STATE)
    active = state.get("active") or {}
    if not active.get("ready"):
        raise DeployError(f"no ready instance behind port {port}: {json.dumps(state, default=str)[:1000]}")
    _, bento_path = resolve_bento(active["bento"], {"BENTOML_HOME": str(bentoml_home(root))})
    photo = load_golden(default_golden(bento_path))[0]
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
        resp = client.post("/review", data=photo.fields, files={"photo": (photo.file.name, photo.file.read_bytes())},
                           headers={SMOKE_HEADER: "1"})
        models = client.get("/models")
    if resp.status_code != 200 or "decision" not in resp.json():
        raise DeployError(f"POST {url}/review answered HTTP {resp.status_code}: {resp.text[:500]}")
    print(f"{url}/review answered {resp.json()['decision']} for golden photo {photo.file.name}; "
          f"serving {active['bento']}", flush=True)
    served = models.json().get("models", {}) if models.status_code == 200 else {}
    return {"url": url, "bento": active["bento"], "decision": resp.json()["decision"],
            "models": {f: m.get("tag") for f, m in served.items()}}
