"""The DAGs run for real: Airflow (SQLite, ``dag.test()``), a git + DVC project, bentoml serve on loopback.

One module-scoped chain on a copy of the trained tiny project: a new batch arrives, ``ingest``
validates and versions it, ``retrain`` retrains what changed through ``dvc repro``, gates, registers
and builds a Bento, ``deploy`` serves it behind the router. Later tests run DAGs again against that
state: retrain with nothing changed, a batch that fails validation, a deploy that fails, monitoring.

To keep the tests short, the copy's dvc.yaml makes only the blur stages depend on every batch
(the others on the first batch, on which ``trained_project`` trained them), and ``dvc commit``
records the trained models in dvc.lock: the new batch retrains blur for real and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.train.families import FAMILIES
from tests.dags.conftest import PROJECT, only, run_dag, tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
BIN = Path(sys.executable).parent
DATA, BENTO, DRIFT = "reviewops://data/", "reviewops://bento/", "reviewops://drift/"


def sh(repo: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


def with_pipeline(repo: Path, first_batch: str) -> None:
    """The project's dvc.yaml (every stage but blur's reading only ``first_batch``) and code, committed;
    dvc.lock recording the models trained_project trained (``dvc commit``)."""
    spec = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        if name != "train_blur":
            body["deps"] = [f"data/batches/{first_batch}" if d == "data/batches" else d for d in body["deps"]]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copytree(PROJECT / "pipelines", repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "dvc", "commit", "-f", "-q")
    assert "up to date" in sh(repo, "dvc", "status"), sh(repo, "dvc", "status")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "pipeline, models trained")


def production(home: Path) -> dict:
    path = home / "reviewops" / "production.json"
    return json.loads(path.read_text()) if path.exists() else {}


def review(port: int, photo: Path) -> dict:
    resp = httpx.post(f"http://127.0.0.1:{port}/review", files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                      data={"listing_id": "dag-test"}, timeout=120, trust_env=False)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def by_name(result: dict, task_id: str) -> dict[str, dict]:
    return {ti["name"]: ti for ti in tasks(result, task_id)}


@pytest.fixture(scope="module")
def chain(trained_project, airflow_env, tmp_path_factory):
    from pipelines.data.generate import generate_batch
    from pipelines.params import load_params
    from pipelines.deploy.router import free_port

    base = tmp_path_factory.mktemp("dag-chain")
    repo = base / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    with_pipeline(repo, "tiny-b1")
    generate_batch(repo / "data" / "incoming", "tiny-b2", 48, 12, params=load_params(repo / "params.yaml"), workers=2)
    home, port = base / "bentoml", free_port()
    env = {**airflow_env, "REVIEWOPS_DVC_REMOTE": str(base / "dvc-remote")}
    run = partial(run_dag, env, root=repo, bentoml_home=home)
    state = {"repo": repo, "home": home, "port": port, "run": run}
    try:
        state["ingest"] = run("ingest")
        state["retrain"] = run("retrain")
        state["deploy"] = run("deploy", {"port": port})
        yield state
    finally:
        from pipelines.deploy.bluegreen import stop_all

        stop_all(repo / ".reviewops" / "deploy")


def test_ingest_retrain_deploy_promotes_a_model_builds_a_bento_and_serves_review(chain):
    repo, home, port = chain["repo"], chain["home"], chain["port"]
    ingest, retrain, deploy = chain["ingest"], chain["retrain"], chain["deploy"]

    assert ingest["state"] == "success", ingest["log"]
    assert only(ingest, "find_batches")["result"] == ["tiny-b2"]
    assert only(ingest, "validate")["result"]["valid"] is True and only(ingest, "validate")["name"] == "tiny-b2"
    assert only(ingest, "version")["result"]["new"] is True
    assert ingest["events"] == [{"uri": DATA, "extra": {"batches": ["tiny-b2"]}, "task": "announce"}]
    assert ["retrain", DATA] in ingest["queued"]                     # the scheduler would start retrain
    assert (repo / "data" / "batches" / "tiny-b2.dvc").exists() and not (repo / "data" / "incoming" / "tiny-b2").exists()
    assert "tiny-b2" in sh(repo, "git", "log", "-1", "--format=%s")

    assert retrain["state"] == "success", retrain["log"]
    trained = {name: ti["result"]["ran"] for name, ti in by_name(retrain, "train").items()}
    evaluated = {name: ti["result"]["ran"] for name, ti in by_name(retrain, "evaluate").items()}
    assert trained == {"blur": ["train_blur"], **{f: [] for f in FAMILIES if f != "blur"}}   # only what changed
    assert evaluated == {"blur": ["evaluate@blur"], **{f: [] for f in FAMILIES if f != "blur"}}
    assert "up to date" in sh(repo, "dvc", "status")
    gate = only(retrain, "gate")["result"]
    assert gate["verdicts"] == {f: "promoted" for f in FAMILIES}, gate     # a fresh registry: every family promoted
    assert set(production(home)) == set(FAMILIES)
    build = only(retrain, "build")
    assert build["state"] == "success" and build["result"]["built"] is True
    tag = build["result"]["bento"]
    assert tag == json.loads((repo / "reports" / "build.json").read_text())["bento"]
    assert retrain["events"] == [{"uri": BENTO, "extra": {"bento": tag}, "task": "build"}]
    assert ["deploy", BENTO] in retrain["queued"]                    # the scheduler would start deploy
    assert only(retrain, "check_verdicts")["state"] == "success"

    assert deploy["state"] == "success", deploy["log"]
    deployed = only(deploy, "deploy")["result"]
    assert deployed["outcome"] == "deployed" and deployed["bento"] == tag and deployed["smoke_photos"] > 0
    assert only(deploy, "verify")["result"]["models"] == production(home)
    photo = sorted((repo / "data" / "batches" / "tiny-b2" / "images").glob("*.jpg"))[0]
    answer = review(port, photo)
    assert answer["decision"] in ("auto_pass", "manual_review") and answer["models"] == production(home)


def test_retrain_again_on_unchanged_data_trains_nothing_and_promotes_nothing(chain):
    repo, home = chain["repo"], chain["home"]
    lock, prod = (repo / "dvc.lock").read_bytes(), production(home)
    models = {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()}
    build_record = (repo / "reports" / "build.json").read_bytes()

    again = chain["run"]("retrain")

    assert again["state"] == "success", again["log"]
    assert {name: ti["result"]["ran"] for name, ti in by_name(again, "train").items()} == {f: [] for f in FAMILIES}
    assert {name: ti["result"]["ran"] for name, ti in by_name(again, "evaluate").items()} == {f: [] for f in FAMILIES}
    assert only(again, "gate")["result"]["verdicts"] == {f: "unchanged" for f in FAMILIES}
    assert only(again, "build")["state"] == "skipped" and again["events"] == []   # no new Bento: deploy not triggered
    assert (repo / "dvc.lock").read_bytes() == lock and production(home) == prod
    assert {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()} == models
    assert (repo / "reports" / "build.json").read_bytes() == build_record


def _bad_batch(repo: Path) -> str:
    from pipelines.data.generate import generate_batch
    from pipelines.params import load_params

    batch = generate_batch(repo / "data" / "incoming", "tiny-bad", 24, 13, params=load_params(repo / "params.yaml"),
                           workers=1)
    jpeg = sorted((batch / "images").glob("*.jpg"))[3]
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])      # cut in half: does not decode
    return batch.name


def test_a_batch_that_fails_validation_stops_ingest_nothing_versioned_nothing_promoted(chain):
    repo, home, port = chain["repo"], chain["home"], chain["port"]
    name = _bad_batch(repo)
    head, batches = sh(repo, "git", "rev-parse", "HEAD"), sorted(p.name for p in (repo / "data" / "batches").iterdir())
    prod, lock = production(home), (repo / "dvc.lock").read_bytes()

    result = chain["run"]("ingest", {"batch": name})

    assert result["state"] == "failed"
    validate = only(result, "validate")
    assert validate["state"] == "failed" and validate["tries"] == 1          # fails at once: retrying cannot help
    assert only(result, "version")["state"] == "upstream_failed"
    assert only(result, "announce")["state"] == "upstream_failed" and result["events"] == []   # retrain not signalled
    report = json.loads((repo / "data" / "quarantine" / name / "validation_result.json").read_text())
    assert not report["ok"] and any(f["column"] == "decodes" for f in report["failures"])
    assert "INVALID" in Path(result["log"]).read_text() and "quarantined at" in Path(result["log"]).read_text()
    assert not (repo / "data" / "incoming" / name).exists() and not (repo / "data" / "batches" / name).exists()
    assert sh(repo, "git", "rev-parse", "HEAD") == head
    assert sorted(p.name for p in (repo / "data" / "batches").iterdir()) == batches
    assert production(home) == prod and (repo / "dvc.lock").read_bytes() == lock
    photo = sorted((repo / "data" / "batches" / "tiny-b1" / "images").glob("*.jpg"))[0]
    assert review(port, photo)["models"] == prod                             # production serving, unchanged


def test_a_failed_deploy_keeps_the_old_service(chain):
    from pipelines.deploy.bluegreen import status

    repo, port = chain["repo"], chain["port"]
    before = status(repo / ".reviewops" / "deploy")["active"]

    result = chain["run"]("deploy", {"port": port, "bento": "reviewops-reviewer:doesnotexist0000"})

    assert result["state"] == "failed" and only(result, "deploy")["tries"] == 1
    assert only(result, "verify")["state"] == "upstream_failed"
    after = status(repo / ".reviewops" / "deploy")["active"]
    assert after["bento"] == before["bento"] and after["pid"] == before["pid"] and after["ready"]
    photo = sorted((repo / "data" / "batches" / "tiny-b1" / "images").glob("*.jpg"))[1]
    assert review(port, photo)["decision"] in ("auto_pass", "manual_review")


def test_drift_runs_the_monitor_and_signals_retrain_only_on_drift(chain):
    pytest.importorskip("monitoring.drift")
    repo = chain["repo"]

    result = chain["run"]("drift")

    assert result["state"] == "success", result["log"]
    report = only(result, "drift")["result"]
    # the log holds only the deploy's smoke requests (left out of the window): no verdict, no signal
    assert report["drifted"] is False and report["status"] == "insufficient_data", report
    assert only(result, "signal_retrain")["state"] == "skipped" and result["events"] == []
    assert report["json"] is None or Path(report["json"]).exists()
    assert any((repo / "monitoring" / "reports").rglob("drift-*.json"))


def test_fp_report_runs_the_monitor(chain):
    pytest.importorskip("monitoring.fp_report")

    result = chain["run"]("fp_report")

    assert result["state"] == "success", result["log"]
    assert only(result, "fp_report")["result"]
