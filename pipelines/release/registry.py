"""The model registry: BentoML's model store plus a per-family production pointer with history.

``register`` exports a family's trained model to an ONNX bundle, checks ONNX against torch on
real photos, and stores it as the BentoML model ``reviewops-<family>`` with its metadata:
test metrics, thresholds, DVC data version, git revision, params hash and a content hash.
``register_bundle`` stores a bundle made without torch (a gallery change: ``pipelines.release.gallery``).
``promote`` moves the family's production pointer (one atomic file replace, under a lock) and
appends to the history; ``rollback`` moves it back. The store is the project's ``.bentoml/``
unless ``BENTOML_HOME`` says otherwise (set before bentoml is imported: ``use_store``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from pipelines.train.evaluate import model_dir, read_metrics
from pipelines.train import families
from pipelines.params import Params
from pipelines.locks import file_lock

MODEL_PREFIX = "reviewops-"


class RegistryError(RuntimeError):
    pass


def use_store(root: Path) -> Path:
    """BENTOML_HOME: the environment's, else ``<root>/.bentoml``; call before bentoml is imported."""
    home = Path(os.environ.setdefault("BENTOML_HOME", str(Path(root).resolve() / ".bentoml")))
    home.mkdir(parents=True, exist_ok=True)
    return home


def state_dir() -> Path:
    import bentoml  # noqa: F401  (the container resolves BENTOML_HOME on import)
    from bentoml._internal.configuration.containers import BentoMLContainer

    path = Path(BentoMLContainer.bentoml_home.get()) / "reviewops"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def content_hash(family: str, root: Path) -> str:
    """What the family would serve: its model files (not the training record) and its thresholds."""
    h = hashlib.sha256()
    base = model_dir(family, root)
    for path in sorted(p for p in base.rglob("*") if p.is_file() and p.name != "train.json"):
        h.update(str(path.relative_to(base)).encode())
        h.update(path.read_bytes())
    h.update(json.dumps(read_metrics(family, root)["thresholds"], sort_keys=True).encode())
    return h.hexdigest()[:16]


def data_version(root: Path) -> dict:
    """The DVC data version: each versioned batch's directory md5, and the git commit of the pointers."""
    batches = {}
    for pointer in sorted((root / "data" / "batches").glob("*.dvc")):
        outs = (yaml.safe_load(pointer.read_text()) or {}).get("outs") or [{}]
        batches[pointer.stem] = outs[0].get("md5")
    rev = _git(root, "log", "-1", "--format=%H", "--", "data/batches")
    return {"batches": batches, "pointer_commit": rev}


def _git(root: Path, *args: str) -> str | None:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


def served_form(family: str, root: Path, params: Params) -> dict:
    """How the candidate would be registered now: the export format and the units served as INT8."""
    from pipelines.release.quantize import int8_choice
    from pipelines.serve.bundle import BUNDLE_FORMAT

    return {"export_format": BUNDLE_FORMAT, "int8_units": int8_choice(family, root, params)}


def same_form(metadata: dict, form: dict) -> bool:
    """A registered model's metadata says it is served in ``form`` (metadata before formats were recorded: format 1)."""
    return metadata.get("export_format", 1) == form["export_format"] and \
        sorted(metadata.get("int8_units") or []) == sorted(form["int8_units"])


def _metadata(family: str, root: Path, params: Params, parity_result: dict, meta: dict) -> dict:
    from pipelines.release.quantize import entries
    from pipelines.release.reviewer import reviewer_figures
    from pipelines.serve.bundle import BUNDLE_FORMAT

    metrics = read_metrics(family, root)
    return {"family": family, "metrics": metrics.get("test", {}), "thresholds": meta["thresholds"],
            "reviewer": reviewer_figures(family, root),           # the whole reviewer when it was registered
            "data_version": data_version(root), "git_revision": _git(root, "rev-parse", "HEAD"),
            "git_dirty": bool(_git(root, "status", "--porcelain", "--untracked-files=no")),
            "params_hash": params.digest(), "content_hash": content_hash(family, root),
            "onnx_parity_max_abs_diff": parity_result, "registered_at": _now(), "export_format": BUNDLE_FORMAT,
            "int8_units": sorted({u for u, e in entries(meta) if e.get("precision") == "int8"})}


def _basic(value):
    """BentoML metadata holds basic types only: drop None entries (NaN in lists), recurse into containers."""
    if isinstance(value, dict):
        return {str(k): _basic(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [float("nan") if v is None else _basic(v) for v in value]
    return value


def register(family: str, root: Path, params: Params) -> str:
    """Export, parity-check and store the family's current model; returns its tag ``reviewops-<family>:<v>``."""
    from pipelines.release.export import export_bundle, parity, parity_photos   # torch: only when exporting

    try:
        families.get(family)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix=f"bundle-{family}-") as tmp:
        bundle = Path(tmp)
        meta = export_bundle(family, root, params, bundle)
        result = parity(family, root, params, bundle, parity_photos(root))
        return register_bundle(family, bundle, _metadata(family, root, params, result, meta))


def register_bundle(family: str, bundle: Path, metadata: dict) -> str:
    """Store an exported bundle directory (its ``meta.json`` names ``family``) with ``metadata``; returns its tag."""
    import bentoml

    from pipelines.serve.bundle import read_meta

    try:
        families.get(family)
        found = read_meta(bundle).get("family")
    except (ValueError, FileNotFoundError) as exc:
        raise RegistryError(str(exc)) from None
    if found != family:
        raise RegistryError(f"{bundle} holds a bundle of {found!r}, not {family!r}")
    with bentoml.models.create(f"{MODEL_PREFIX}{family}", labels={"family": family, "project": "reviewops"},
                               metadata=_basic(metadata)) as model:
        shutil.copytree(bundle, model.path, dirs_exist_ok=True)           # graphs, trunk/ stages, files
    return str(model.tag)


def model_info(tag: str) -> dict:
    """A registered model's metadata and bundle path."""
    import bentoml

    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as exc:
        raise RegistryError(f"model {tag} is not in the model store") from exc
    return {"tag": str(model.tag), "path": model.path, "metadata": dict(model.info.metadata),
            "created": model.info.creation_time.isoformat()}


def find_by_content(family: str, content: str, form: dict | None = None) -> str | None:
    """The newest registered model of ``family`` with this content hash (a re-run registers nothing new), served in
    ``form`` (:func:`served_form`) when given."""
    import bentoml

    try:
        models = bentoml.models.list(f"{MODEL_PREFIX}{family}")
    except bentoml.exceptions.NotFound:
        return None
    found = [m for m in models if m.info.metadata.get("content_hash") == content
             and (form is None or same_form(m.info.metadata, form))]
    return str(max(found, key=lambda m: m.info.creation_time).tag) if found else None


def production() -> dict[str, str]:
    """Family -> tag of the model in production (families never promoted are absent)."""
    path = state_dir() / "production.json"
    return json.loads(path.read_text()) if path.exists() else {}


def history(family: str | None = None) -> list[dict]:
    path = state_dir() / "history.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if family is None or r["family"] == family]


def _move(family: str, tag: str, action: str, reason: str) -> dict:
    model_info(tag)  # refuses a tag that is not in the store
    state = state_dir()
    with file_lock(state / ".lock", None, "the production pointer"):
        current = production()
        entry = {"time": _now(), "family": family, "action": action, "from": current.get(family), "to": tag,
                 "reason": reason}
        current[family] = tag
        tmp = state / "production.json.tmp"
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        os.replace(tmp, state / "production.json")
        with open(state / "history.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
    return entry


def promote(family: str, tag: str, reason: str = "gate passed") -> dict:
    if not tag.startswith(f"{MODEL_PREFIX}{family}:"):
        raise RegistryError(f"{tag} is not a model of the {family} family")
    return _move(family, tag, "promote", reason)


def rollback(family: str, to: str | None = None) -> dict:
    """Point production back at ``to`` (a tag or version) or, by default, the model before the current one."""
    current = production().get(family)
    if current is None:
        raise RegistryError(f"{family} has no production model to roll back")
    if to is None:
        previous = [e["from"] for e in reversed(history(family)) if e["to"] == current and e["from"]]
        if not previous:
            raise RegistryError(f"{family}: {current} is the first production model; there is nothing to roll back to")
        to = previous[0]
    elif ":" not in to:
        to = f"{MODEL_PREFIX}{family}:{to}"
    if to == current:
        raise RegistryError(f"{family} is already at {to}")
    return _move(family, to, "rollback", f"rollback from {current}")


def production_bundles() -> dict[str, Path]:
    """Family -> bundle directory of every production model."""
    return {family: Path(model_info(tag)["path"]) for family, tag in production().items()}
