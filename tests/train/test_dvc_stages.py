"""The project's own dvc.yaml, unchanged, on the trained tiny project: what goes stale when one thing changes.

``dvc commit`` records the models ``trained_project`` trained (from this very data, code and
params.yaml) in dvc.lock without training again; every stage is then up to date. Each test makes one
change and reads ``dvc status`` (what changed, per stage) and ``dvc repro --dry`` (what ``dvc repro``,
and so the retrain DAG, would run): one family's settings or code retrain that family only; a new
prohibited category trains that category only; a new versioned batch retrains every family.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.params import load_params

pytestmark = pytest.mark.slow            # on the trained tiny project
PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAMILIES = ("sku", "blur", "manipulation", "prohibited", "detector")


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def stale(repo: Path) -> dict[str, list]:
    """``dvc status --json``: stage -> what changed (the data's own .dvc files left out)."""
    out = dvc(repo, "status", "--json")
    return {k: v for k, v in json.loads(out[out.find("{"):] or "{}").items() if not k.endswith(".dvc")}


def would_run(repo: Path) -> set[str]:
    """The stages ``dvc repro`` would run (dry run, the run cache off so that nothing is restored from it)."""
    return set(re.findall(r"Running stage '([^']+)'", dvc(repo, "repro", "--dry", "--no-run-cache")))


def train_stages(family: str, categories) -> set[str]:
    return {"train_prohibited_neck", *(f"train_prohibited@{c}" for c in categories)} if family == "prohibited" \
        else {f"train_{family}"}


def every_stage(categories) -> set[str]:
    return {s for f in FAMILIES for s in train_stages(f, categories)} | {f"evaluate@{f}" for f in FAMILIES} | \
        {"reviewer", "real_photos"}


@contextmanager
def params_changed(repo: Path, change):
    """params.yaml changed by ``change(raw)`` for the block; restored (and everything up to date again) after."""
    path = repo / "params.yaml"
    before = path.read_text()
    raw = yaml.safe_load(before)
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(before)
        assert stale(repo) == {}


def setting(*keys, value):
    def change(raw):
        block = raw
        for key in keys[:-1]:
            block = block[key]
        assert keys[-1] in block and block[keys[-1]] != value, keys
        block[keys[-1]] = value
    return change


def model_files(repo: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file() and p.name != ".gitignore"}


@pytest.fixture(scope="module")
def pipeline(trained_project, tmp_path_factory) -> Path:
    """A copy of the trained project with the project's dvc.yaml and code, and dvc.lock recording its models."""
    repo = tmp_path_factory.mktemp("dvc-stages") / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    shutil.copy2(PROJECT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(PROJECT / "pipelines", repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    models = model_files(repo)
    dvc(repo, "commit", "-f")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline; dvc.lock records the trained models")
    assert model_files(repo) == models                     # nothing trained, nothing rewritten
    return repo


def test_the_recorded_project_is_up_to_date_and_dvc_lock_holds_the_trained_outputs(pipeline):
    categories = load_params(pipeline / "params.yaml").prohibited.categories
    assert stale(pipeline) == {} and would_run(pipeline) == set()
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]
    assert set(lock) == every_stage(categories)
    for name, stage in lock.items():
        for out in stage["outs"]:
            path = pipeline / out["path"]
            assert path.exists(), (name, out["path"])
            if path.is_file():                             # metrics/<family>.json: the file the evaluation wrote
                assert out["md5"] == hashlib.md5(path.read_bytes()).hexdigest(), out["path"]
    # the models' hashes are those of the files on disk: dvc status re-hashes them and finds nothing changed
    assert {o["path"] for s in lock.values() for o in s["outs"]} >= {f"models/{f}" for f in FAMILIES if f != "prohibited"}


@pytest.mark.parametrize("family, keys, value", [
    ("blur", ("train", "blur", "lr"), 0.003),
    ("sku", ("train", "sku", "candidates"), 3),
    ("manipulation", ("train", "manipulation", "train_crop"), 0.5),
    ("detector", ("train", "detector", "conf"), 0.05),
    ("prohibited", ("train", "prohibited", "lr"), 0.002),   # one block for every category: all of them retrain
])
def test_one_familys_settings_stale_that_family_only(pipeline, family, keys, value):
    categories = load_params(pipeline / "params.yaml").prohibited.categories
    # the whole reviewer (it exports every family with its settings) is re-evaluated too, and the detector's
    # settings re-evaluate the SKU check, which reads the product crop by the detector's boxes
    expected = train_stages(family, categories) | {f"evaluate@{family}", "reviewer"} | \
        ({"evaluate@sku"} if family == "detector" else set())
    with params_changed(pipeline, setting(*keys, value=value)):
        status = stale(pipeline)
        assert set(status) == expected, status
        for name, stage in status.items():
            if name != "reviewer":
                assert stage == [{"changed deps": {"params.yaml": {".".join(keys[:2]): "modified"}}}], stage
        assert would_run(pipeline) == expected


def test_the_detectors_defects_settings_retrain_the_detector_only(pipeline):
    """train.defects is read by training only: the detector retrains, and its evaluation follows its new model."""
    with params_changed(pipeline, setting("train", "defects", "lr", value=0.003)):
        assert set(stale(pipeline)) == {"train_detector", "reviewer"}


def test_the_training_device_retrains_and_re_evaluates_nothing(pipeline):
    """train.device says where training runs, not what it computes (dvc.yaml): no train or evaluate stage
    depends on it; only the whole reviewer, which reads the whole train section, re-runs."""
    with params_changed(pipeline, setting("train", "device", value="cpu")):
        assert set(stale(pipeline)) == {"reviewer"}


def test_the_real_photo_checks_re_score_and_their_training_material_retrains_blur_and_manipulation_only(pipeline):
    """real_photos.checks is read by the real-photo check only; real_photos.train by the two families that learn
    from it (and so their evaluations, once they have retrained) and by the whole reviewer, whose INT8 choice
    compares FP32 and INT8 on those photos (never on the checks)."""
    with params_changed(pipeline, lambda raw: raw["real_photos"]["checks"].pop()):
        assert set(stale(pipeline)) == {"real_photos"}
    with params_changed(pipeline, lambda raw: raw["real_photos"]["train"].pop()):
        assert set(stale(pipeline)) == {"train_blur", "train_manipulation", "reviewer"}


def test_one_familys_code_stales_that_family_only(pipeline):
    code = pipeline / "pipelines" / "train" / "families" / "manipulation.py"
    before = code.read_text()
    code.write_text(before + "\n# a change\n")
    try:
        status = stale(pipeline)
        assert set(status) == {"train_manipulation", "evaluate@manipulation"}, status
        assert all(s[0]["changed deps"] == {"pipelines/train/families/manipulation.py": "modified"} for s in status.values())
    finally:
        code.write_text(before)
    assert stale(pipeline) == {}


def test_shared_training_code_stales_every_train_stage(pipeline):
    code = pipeline / "pipelines" / "train" / "harness.py"
    before = code.read_text()
    code.write_text(before + "\n# a change\n")
    try:
        categories = load_params(pipeline / "params.yaml").prohibited.categories
        assert set(stale(pipeline)) == {s for f in FAMILIES for s in train_stages(f, categories)}
    finally:
        code.write_text(before)
    assert stale(pipeline) == {}


def test_the_camera_view_ranges_retrain_every_family(pipeline):
    """train.camera is read by every family's training (train.<family>.camera_views picks whether it trains on views):
    a change retrains them all, and re-evaluates nothing before they have."""
    categories = load_params(pipeline / "params.yaml").prohibited.categories
    with params_changed(pipeline, setting("train", "camera", "noise", value=[0.0, 6.0])):
        assert set(stale(pipeline)) == {s for f in FAMILIES for s in train_stages(f, categories)} | {"reviewer"}


def test_a_new_prohibited_category_trains_that_category_only(pipeline):
    with params_changed(pipeline, lambda raw: raw["prohibited"]["categories"].append("fireworks")):
        status = stale(pipeline)
        trained = {s for s in status if s.startswith("train_")}
        assert trained == {"train_prohibited@fireworks"}, status           # the ten trained ones stay as they are
        assert {"changed outs": {"models/prohibited/fireworks": "deleted"}} in status["train_prohibited@fireworks"]
        # every evaluate stage (and the whole reviewer) names prohibited.categories: re-evaluated, never retrained
        assert set(status) - trained == {f"evaluate@{f}" for f in FAMILIES} | {"reviewer"}
        assert would_run(pipeline) == set(status)


def test_a_new_versioned_batch_stales_every_family(pipeline, tmp_path):
    """Last in this module: it commits a second batch into the repo."""
    from pipelines.data.generate import generate_batch
    from pipelines.data.version import version_batch

    params = load_params(pipeline / "params.yaml")
    src = generate_batch(tmp_path / "incoming", "tiny-b9", 12, 19, params=params, workers=1)
    version_batch(src, repo=pipeline, params=params, push=False)

    status = stale(pipeline)
    # every stage but the real-photo check, which reads no data: it re-runs once the reviewer stage has exported
    # new bundles (models/reviewer), which a dry run does not do
    assert set(status) == every_stage(params.prohibited.categories) - {"real_photos"}, sorted(status)
    for stage in status.values():
        assert stage[0]["changed deps"]["data/batches"] == "modified"
    assert would_run(pipeline) == every_stage(params.prohibited.categories) - {"real_photos"}
