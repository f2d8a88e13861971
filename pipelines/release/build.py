"""``reviewops build``: the reviewer Bento with every family's production model and a recorded smoke set.

The build context is a temporary directory: ``bentos/service.py``, the bentofile with the
production model tags, ``production.json``, ``params.yaml``, the ``pipelines`` and ``monitoring``
packages, the serving requirements pinned from constraints.txt, and ``golden/``: photos of the
frozen test split with the decision the production models give them, computed here with the
service's own decode and decision code. ``reviewops deploy`` replays them before it switches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipelines.release import registry
from pipelines.data.dataset import split_frame, versioned_manifest
from pipelines.train.families import FAMILIES
from pipelines.params import Params
from pipelines.locks import file_lock

PROJECT = Path(__file__).resolve().parents[2]
# What the Bento runs: the serving package, params and the prediction log (SQLite, or PostgreSQL through psycopg 3);
# no torch, timm or ultralytics.
SERVING_FILES = ("pipelines/__init__.py", "pipelines/params.py", "pipelines/serve", "monitoring/__init__.py",
                 "monitoring/prediction_log.py", "monitoring/feedback.py")
SERVING_PACKAGES = ("bentoml", "onnxruntime", "opencv-python", "pillow", "numpy", "pandas", "sqlalchemy", "pyyaml",
                    "pydantic", "fastapi", "prometheus-client", "psycopg", "psycopg-binary", "faiss-cpu")


class BuildError(RuntimeError):
    pass


def _requirements() -> str:
    pins = {}
    for line in (PROJECT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name = line.split("==")[0].strip().lower().replace("_", "-")
            pins[name] = line.strip()
    return "\n".join(pins[p] for p in SERVING_PACKAGES if p in pins) + "\n"


def golden_set(root: Path, params: Params, bundles: dict[str, Path], out: Path, candidates: int = 160) -> list[dict]:
    """``serving.golden_photos`` test photos, half auto-passed where possible, with their recorded decisions."""
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.review import claims, review

    df = split_frame(versioned_manifest(root), "test").sort_values("listing_id").head(candidates)
    answers = [a for a, _ in review(ReviewerModels.as_served(bundles, params), df, params)]
    rows = [(row, claims(row)["sku_id"], answer) for (_, row), answer in zip(df.iterrows(), answers)]
    n = params.serving.golden_photos
    passed = [r for r in rows if r[2]["decision"] == "auto_pass"][: n // 2]
    chosen = passed + [r for r in rows if r[2]["decision"] != "auto_pass"][: n - len(passed)]
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, (row, sku, answer) in enumerate(sorted(chosen, key=lambda r: r[0]["listing_id"])):
        name = f"{i:03d}{Path(row['path']).suffix}"
        shutil.copy2(row["path"], out / name)
        photos.append({"file": name, "sku_id": sku, "category": claims(row)["category"],   # what the answer was given
                       "listing_id": str(row["listing_id"]), "decision": answer["decision"],
                       "reasons": sorted(answer["reasons"])})
    (out / "golden.json").write_text(json.dumps({"photos": photos}, indent=1))
    return photos


def build(root: Path, params: Params) -> dict:
    """Build the Bento from the production models; returns its tag and what went in."""
    production = registry.production()
    missing = [f for f in FAMILIES if f not in production]
    if missing:
        raise BuildError(f"no production model for {', '.join(missing)}: run `reviewops gate` first")
    bundles = registry.production_bundles()
    with tempfile.TemporaryDirectory(prefix="reviewer-bento-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(PROJECT / "bentos" / "service.py", ctx / "service.py")
        spec = yaml.safe_load((PROJECT / "bentos" / "bentofile.yaml").read_text())
        spec["models"] = sorted(production.values())
        (ctx / "bentofile.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (ctx / "production.json").write_text(json.dumps(production, indent=1, sort_keys=True))
        shutil.copy2(root / "params.yaml", ctx / "params.yaml")
        (ctx / "requirements.txt").write_text(_requirements())
        for rel in SERVING_FILES:
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            if (PROJECT / rel).is_dir():
                shutil.copytree(PROJECT / rel, ctx / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(PROJECT / rel, ctx / rel)
        golden = golden_set(root, params, bundles, ctx / "golden")
        bentoml = Path(sys.executable).with_name("bentoml")
        # one build at a time per store: concurrent `bentoml build`s fail listing it ("does not contain a 'bento.yaml'")
        with file_lock(registry.state_dir() / "build.lock", None, "bentoml build in this store"):
            done = subprocess.run([str(bentoml), "build", str(ctx), "-f", str(ctx / "bentofile.yaml"), "--output", "tag"],
                                  capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"bentoml build failed:\n{done.stderr[-3000:] or done.stdout[-3000:]}")
        tag = next((line.split("__tag__:", 1)[1].strip() for line in done.stdout.splitlines() if "__tag__:" in line),
                   done.stdout.strip().splitlines()[-1].strip())
    record = {"bento": tag, "models": production, "golden_photos": len(golden),
              "golden_decisions": {d: sum(p["decision"] == d for p in golden) for d in ("auto_pass", "manual_review")}}
    out = root / "reports" / "build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return record


def newest_bento(name: str = "reviewops-reviewer") -> str | None:
    """The tag of the most recently built reviewer Bento, or None."""
    import bentoml

    try:
        bentos = bentoml.bentos.list(name)
    except bentoml.exceptions.NotFound:
        return None
    return str(max(bentos, key=lambda b: b.info.creation_time).tag) if bentos else None
