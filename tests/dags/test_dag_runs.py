"""The DAGs run for real: Airflow (SQLite, ``dag.test()``), a git + DVC project, bentoml serve on loopback.

One module-scoped chain on a copy of the trained tiny project: a new batch arrives, ``ingest``
validates and versions it, ``retrain`` retrains what changed through ``dvc repro``, gates, registers
and builds a Bento, ``deploy`` serves it behind the router. Later tests run DAGs again against that
state: retrain with nothing changed, a batch that fails validation, a deploy that fails, monitoring.

The copy runs the project's own dvc.yaml; ``dvc commit`` records the models ``trained_project``
trained on the first batch in dvc.lock (no training). Every family reads every batch, so the new
batch retrains every family, as it would in production; that one family's settings or code retrain
that family only is shown on the same dvc.yaml by tests/train/test_dvc_stages.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from functools import partial
from html import escape as html_escape
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.params import load_params
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


def with_pipeline(repo: Path) -> None:
    """The project's dvc.yaml and code, committed; dvc.lock recording the models trained_project trained
    (``dvc commit``)."""
    shutil.copy2(PROJECT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(PROJECT / "pipelines", repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "dvc", "commit", "-f", "-q")
    assert "up to date" in sh(repo, "dvc", "status"), sh(repo, "dvc", "status")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "pipeline, models trained")


def production(home: Path) -> dict:
    path = home / "reviewops" / "production.json"
    return json.loads(path.read_text()) if path.exists() else {}


def review(port: int, photo: Path, listing_id: str = "dag-test") -> dict:
    resp = httpx.post(f"http://127.0.0.1:{port}/review", files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                      data={"listing_id": listing_id}, timeout=120, trust_env=False)
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
    with_pipeline(repo)
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
    categories = load_params(repo / "params.yaml").prohibited.categories
    assert trained == {f: sorted(["train_prohibited_neck", *(f"train_prohibited@{c}" for c in categories)])
                       if f == "prohibited" else [f"train_{f}"] for f in FAMILIES}   # the new batch is every family's data
    assert evaluated == {f: [f"evaluate@{f}"] for f in FAMILIES}
    assert all(json.loads((repo / "models" / f / "train.json").read_text())["data"]["batches"] == ["tiny-b1", "tiny-b2"]
               for f in FAMILIES if f != "prohibited")
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


def test_the_retrain_ran_the_real_dvc_yaml_every_metric_and_plot_shows_and_a_second_dvc_repro_runs_nothing(chain):
    """What `dvc repro` of the project's dvc.yaml gives, on the models the retrain DAG just trained through it (every
    family: the new batch is every family's data): each family's files and training record, `dvc metrics show` and
    `dvc plots show` of all of it, metrics consistent with the labels, and a second `dvc repro` that runs nothing."""
    from pipelines.data.dataset import versioned_manifest
    from pipelines.data.gallery import read_gallery
    from tests.models.test_families import MODEL_FILES, _check_metrics, _numbers

    repo = chain["repo"]
    params = load_params(repo / "params.yaml")
    categories = params.prohibited.categories
    records = list((repo / "models").glob("*/train.json")) + list((repo / "models").glob("prohibited/*/train.json"))
    training = sum(json.loads(p.read_text())["seconds"] for p in records)
    assert training < 180, f"the tiny profile must train all five families in under 3 minutes: {training:.0f} s"
    assert sorted(p.name for p in (repo / "models" / "prohibited").iterdir() if p.is_dir()) == sorted([*categories, "_neck"])
    neck = json.loads((repo / "models" / "prohibited" / "_neck" / "train.json").read_text())
    assert params.train.prohibited.neck and neck["neck"], neck       # the default: one neck, a light head per category
    photos = sum(len(list((repo / "data" / "batches" / b / "images").glob("*.jpg"))) for b in ("tiny-b1", "tiny-b2"))
    for family, files in MODEL_FILES.items():
        dirs = [repo / "models" / family / c for c in categories] if family == "prohibited" else [repo / "models" / family]
        for d in dirs:
            assert files <= {p.name for p in d.iterdir()}, (d, sorted(p.name for p in d.iterdir()))
            record = json.loads((d / "train.json").read_text())
            assert record["seconds"] > 0 and 1 <= record["epochs_run"] <= 2, record     # the tiny profile's cap
            if family == "prohibited":
                assert record["category"] == d.name and isinstance(record["train_positives"], int), record
                assert record["neck"] == neck["neck"], record                  # every head on the neck trained here
            else:
                assert record["data"] == {"batches": ["tiny-b1", "tiny-b2"], "photos": photos,
                                          "splits": record["data"]["splits"]}, record
                assert sum(record["data"]["splits"].values()) == photos and record["family"] == family, record
    shown = json.loads(subprocess.run([str(BIN / "dvc"), "metrics", "show", "--json"], cwd=repo, capture_output=True,
                                      text=True, check=True).stdout)[""]["data"]
    metrics = {f: json.loads((repo / "metrics" / f"{f}.json").read_text()) for f in FAMILIES}
    for f in FAMILIES:                    # dvc metrics show: every number evaluate wrote (it leaves out nulls and text)
        assert _numbers(shown[f"metrics/{f}.json"]["data"]) == _numbers(metrics[f]), f
    _check_metrics(repo, params, {f: m["test"] for f, m in metrics.items()})
    # the SKU alarm calibrates on validation's wrong claims and on validation's outside-catalogue photos (never
    # trained on, in no gallery) with the generated ones (recall_targets.extra_positives.unknown_sku, capped at the
    # tiny profile's extra_photos: every one shows a new product); never on test, nor on the training split's
    manifest = versioned_manifest(repo)
    enrolled = set(read_gallery(repo)["sku_id"])
    seen = manifest[(manifest["split"] == "val") & (manifest["sku_id"] != "none")]
    val = seen[seen["sku_id"].isin(enrolled) & seen["claimed_sku"].isin(enrolled)]
    generated = min(params.recall_targets.extra_positives["unknown_sku"], params.train.caps.extra_photos)
    assert metrics["sku"]["calibration_photos"] == {
        "wrong_claim": int((val["claimed_sku"] != val["sku_id"]).sum()),
        "outside_catalogue": int((~seen["sku_id"].isin(enrolled)).sum()) + generated}, metrics["sku"]["calibration_photos"]
    assert f"{generated} generated outside-catalogue photos" in metrics["sku"]["threshold_source"]["similarity"]
    out = repo.parent / "plots_html"
    plots = sh(repo, "dvc", "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    titles = [body["title"] for plot in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"] for body in plot.values()]
    assert len(titles) == 5 and all(t in page for t in titles), plots               # every plot dvc.yaml declares
    assert all(column in page for column in ("genuine_claims", "outside_catalogue", "laplacian_baseline")), plots

    before = {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()}
    again = sh(repo, "dvc", "repro")
    assert "didn't change, skipping" in again and "Running stage" not in again, again
    assert {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()} == before


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


def served(repo: Path):
    """The prediction log of the deployed service (deploy smoke requests included)."""
    from monitoring.prediction_log import PredictionLog, resolve_url

    log = PredictionLog(resolve_url(load_params(repo / "params.yaml").serving.prediction_log, repo))
    try:
        return log.read()
    finally:
        log.close()


def test_drift_runs_the_monitor_and_signals_retrain_only_on_drift(chain):
    """Shifted traffic firing the alarm: tests/dags/test_drift_dag.py."""
    repo = chain["repo"]
    log = served(repo)
    smoke = log["request_id"].str.startswith("smoke-")

    result = chain["run"]("drift")

    assert result["state"] == "success", result["log"]
    report = only(result, "drift")["result"]
    # the log holds the deploy's smoke requests (left out) and the few answers of these tests: no verdict, no signal
    assert report["drifted"] is False and report["status"] == "insufficient_data", report
    assert report["rows"] == (~smoke).sum() < load_params(repo / "params.yaml").monitoring.min_rows
    assert report["excluded_rows"] == {"deploy smoke requests": int(smoke.sum())} and smoke.sum() > 0
    assert only(result, "signal_retrain")["state"] == "skipped" and result["events"] == []
    assert ["retrain", DRIFT] not in result["queued"]
    doc = json.loads(Path(report["json"]).read_text())
    assert doc["reviewops"]["status"] == "insufficient_data" and doc["reviewops"]["rows"] == report["rows"]
    assert doc["reviewops"]["until"] == report["until"] and "fewer than monitoring.min_rows" in doc["reviewops"]["message"]
    assert doc["evidently"] is None and report["html"] is None                  # no comparison, so no Evidently page
    assert {c["column"] for c in doc["reviewops"]["columns"]} >= {"blur_score", "sku_similarity", "decision"}


def test_fp_report_counts_every_check_from_the_answers_and_the_reviews(chain, tmp_path):
    """Two more answers; a reviewer passes every flag of the first (false positives) and confirms every flag of
    the second. The DAG's report counts, per check, what the log and those verdicts say."""
    from monitoring.feedback import import_csv

    repo, port = chain["repo"], chain["port"]
    photos = sorted((repo / "data" / "batches" / "tiny-b2" / "images").glob("*.jpg"))[2:4]
    passed, confirmed = (review(port, photo, listing_id=f"fp-{i}") for i, photo in enumerate(photos))
    assert passed["reasons"] and confirmed["reasons"]                # the tiny reviewer flags nearly every photo
    verdicts = [("fp-0", r, "false_positive") for r in passed["reasons"]] + \
               [("fp-1", r, "confirmed") for r in confirmed["reasons"]]
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("listing_id,check,verdict\n" + "".join(f"{a},{b},{c}\n" for a, b, c in verdicts))
    assert import_csv(repo, reviews) == len(verdicts)
    log = served(repo)
    answers = log[~log["request_id"].str.startswith("smoke-")].drop_duplicates("listing_id", keep="last")
    flagged = Counter(r for reasons in answers["reasons"] for r in reasons)

    result = chain["run"]("fp_report")

    assert result["state"] == "success", result["log"]
    report = only(result, "fp_report")["result"]
    assert report["predictions"] == len(answers) == 3                # dag-test (its latest answer), fp-0, fp-1
    assert report["feedback_rows"] == len(verdicts) and report["reviewed_listings"] == 2
    rows = {c["check"]: c for c in report["checks"]}
    assert set(rows) == set(flagged)
    for check, n in flagged.items():
        fp, ok = int(check in passed["reasons"]), int(check in confirmed["reasons"])
        row = rows[check]
        assert (row["flagged"], row["reviewed"], row["confirmed"], row["false_positives"], row["unreviewed"],
                row["misses"]) == (n, fp + ok, ok, fp, n - fp - ok, 0), row
        assert row["false_positive_rate"] == (fp / (fp + ok) if fp + ok else None), row
    top = report["top_false_positives"]
    assert sorted(t["check"] for t in top) == sorted(passed["reasons"])[:12] and {t["listing_id"] for t in top} == {"fp-0"}
    html = Path(report["html"])
    page = html.read_text()
    assert html.is_file() and "False positives per check" in page
    assert all(f">{html_escape(check)}<" in page for check in flagged), [c for c in flagged if c not in page]
    assert json.loads(Path(report["json"]).read_text())["checks"] == report["checks"]
