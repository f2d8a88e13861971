"""Every DAG of dags/ parses with real Airflow: no import error, no cycle, retries, docs, owner, tags, wiring."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.dags.conftest import DAGS

OURS = {"ingest", "retrain", "deploy", "drift", "fp_report", "gallery_deploy", "policy_deploy"}

PARSE = """
import json, sys, time
start = time.perf_counter()
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.sdk import Asset
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1], bundle_name="dags-folder")
seconds = time.perf_counter() - start
out = {"errors": {k: v[-1500:] for k, v in bag.import_errors.items()}, "seconds": seconds,
       "heavy": sorted(m for m in ("torch", "bentoml", "timm", "ultralytics", "dvc", "great_expectations", "evidently", "pandas")
                       if m in sys.modules), "dags": {}}
def flat(cond):
    return [cond.uri] if hasattr(cond, "uri") else [u for o in cond.objects for u in flat(o)]
for dag_id, dag in bag.dags.items():
    cycle = None
    try:
        dag.check_cycle()
    except Exception as exc:
        cycle = str(exc)
    timetable = dag.timetable
    assets = getattr(timetable, "asset_condition", None)
    out["dags"][dag_id] = {
        "file": dag.fileloc, "doc": dag.doc_md or "", "owner": dag.owner, "tags": sorted(dag.tags), "cycle": cycle,
        "catchup": dag.catchup, "timetable": type(timetable).__name__,
        "cron": getattr(getattr(timetable, "timetable", timetable), "expression", None),
        "schedule_assets": sorted(flat(assets)) if assets is not None else [],
        "condition": type(assets).__name__ if assets is not None else None,
        "tasks": {t.task_id: {"retries": t.retries, "backoff": float(t.retry_exponential_backoff or 0),
                              "policy": type(t.retry_policy).__name__ if t.retry_policy else None,
                              "owner": t.owner, "max_active_tis_per_dag": t.max_active_tis_per_dag,
                              "outlets": sorted(o.uri for o in t.outlets if isinstance(o, Asset)),
                              "downstream": sorted(t.downstream_task_ids)} for t in dag.tasks}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(airflow_env) -> dict:
    done = subprocess.run([sys.executable, "-c", PARSE, str(DAGS)], env=airflow_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_dag_imports_without_error_or_cycle_and_every_task_retries_with_backoff(parsed):
    assert parsed["errors"] == {}
    assert OURS <= set(parsed["dags"]), sorted(parsed["dags"])
    for dag_id, dag in parsed["dags"].items():
        assert dag["cycle"] is None, (dag_id, dag["cycle"])
        assert dag["owner"] == "ml-platform" and "reviewops" in dag["tags"], dag_id
        assert dag["doc"].startswith(f"### {dag_id}") and len(dag["doc"]) > 300, dag_id   # the UI's explanation
        assert dag["catchup"] is False, dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1 and task["backoff"] >= 2.0, (dag_id, task_id, task)
            assert task["owner"] == "ml-platform", (dag_id, task_id)
            if dag_id in OURS:          # a failed validation or a refused candidate fails at once, not after retries
                assert task["policy"] == "ExceptionRetryPolicy", (dag_id, task_id)
    # DAG files are wiring: parsing them imports none of the heavy libraries the tasks use
    assert parsed["heavy"] == [], parsed["heavy"]


def test_the_assets_chain_ingest_retrain_deploy_and_drift_schedules_retrain(parsed):
    dags = parsed["dags"]
    data, bento, drift = "reviewops://data/", "reviewops://bento/", "reviewops://drift/"
    assert dags["ingest"]["tasks"]["announce"]["outlets"] == [data]
    assert dags["retrain"]["timetable"] == "AssetOrTimeSchedule"              # new data, drift, or weekly
    assert dags["retrain"]["schedule_assets"] == [data, drift] and dags["retrain"]["condition"] == "AssetAny"
    assert dags["retrain"]["cron"] == "0 3 * * 1"
    assert dags["retrain"]["tasks"]["build"]["outlets"] == [bento]
    assert dags["deploy"]["schedule_assets"] == [bento]
    assert dags["drift"]["tasks"]["signal_retrain"]["outlets"] == [drift]
    assert dags["drift"]["cron"] == dags["fp_report"]["cron"] == "0 0 * * *"  # daily
    # DVC holds one lock per work tree: the mapped DVC tasks run one at a time
    for dag_id, task_id in (("ingest", "validate"), ("ingest", "version"), ("retrain", "train"), ("retrain", "evaluate"),
                            ("retrain", "reviewer")):
        assert dags[dag_id]["tasks"][task_id]["max_active_tis_per_dag"] == 1, (dag_id, task_id)
    retrain = dags["retrain"]["tasks"]
    assert retrain["train"]["downstream"] == ["evaluate"] and retrain["evaluate"]["downstream"] == ["reviewer"]
    assert retrain["reviewer"]["downstream"] == ["gate"]
    assert retrain["gate"]["downstream"] == ["build", "check_verdicts", "reference"]
    assert retrain["build"]["downstream"] == ["check_verdicts"] and retrain["reference"]["downstream"] == []
    ingest = dags["ingest"]["tasks"]
    assert ingest["validate"]["downstream"] == ["version"] and ingest["version"]["downstream"] == ["announce"]
