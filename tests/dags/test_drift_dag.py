"""The drift DAG on real traffic: shifted traffic fires the alarm, emits ``reviewops://drift`` and queues ``retrain``;
the same DAG over unshifted traffic emits nothing.

The traffic is the session's ``monitored`` project (tests/monitoring/conftest.py): the prediction log
of the tiny reviewer holds 150 unshifted answers of the day before yesterday and 150 shifted ones
(more blur, new SKUs) of the last day. Each run works on its own copy of that project (the monitoring
tests keep their reports, alerts and Evidently workspace) and its own Airflow database, so the asset
queue it reads holds only what this run queued. No server runs: the DAG reads the log.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import BIN, only, run_dag

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DRIFT = "reviewops://drift/"           # the asset as Airflow records it (alerts name it without the slash)
QUEUED = ("import json; from pipelines.app.asset_queue import queued_asset_runs; "
          "print(json.dumps(queued_asset_runs()))")


def fresh_airflow(airflow_env: dict, home: Path) -> dict:
    """The session's Airflow settings with an empty database of its own."""
    env = {**airflow_env, "AIRFLOW_HOME": str(home)}
    done = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return env


def queued(env: dict) -> list[list[str]]:
    done = subprocess.run([sys.executable, "-c", QUEUED], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def project_copy(monitored: dict, dest: Path) -> Path:
    shutil.copytree(monitored["repo"], dest, symlinks=True)
    return dest


def drift_run(monitored, airflow_env, base: Path, repo: Path) -> dict:
    env = fresh_airflow(airflow_env, base / "airflow")
    before = queued(env)
    result = run_dag(env, "drift", {"window": "1d"}, root=repo)
    return {"result": result, "queued_before": before, "env": env, "repo": repo}


@pytest.fixture(scope="module")
def shifted(monitored, airflow_env, tmp_path_factory):
    base = tmp_path_factory.mktemp("drift-dag-shifted")
    return drift_run(monitored, airflow_env, base, project_copy(monitored, base / "repo"))


@pytest.fixture(scope="module")
def quiet(monitored, airflow_env, tmp_path_factory):
    """The same log with the shifted answers removed and the unshifted day moved to the last day."""
    base = tmp_path_factory.mktemp("drift-dag-quiet")
    repo = project_copy(monitored, base / "repo")
    with sqlite3.connect(repo / "monitoring" / "predictions.sqlite") as db:
        db.execute("DELETE FROM predictions WHERE request_id LIKE 'shifted-%'")
        live = db.execute("SELECT id, ts FROM predictions WHERE request_id LIKE 'live-%'").fetchall()
        db.executemany("UPDATE predictions SET ts = ? WHERE id = ?",          # naive UTC, as the log stores it
                       [((dt.datetime.fromisoformat(ts) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f"), i)
                        for i, ts in live])
    db.close()
    assert len(live) == len(monitored["manifests"]["live"])
    return drift_run(monitored, airflow_env, base, repo)


def test_shifted_traffic_fires_the_alarm_emits_the_drift_asset_and_queues_retrain(shifted, monitored):
    result, repo = shifted["result"], shifted["repo"]
    assert result["state"] == "success", result["log"]

    report = only(result, "drift")["result"]
    assert report["status"] == "drift" and report["drifted"] is True, report
    assert set(report["drifted_columns"]) & {"blur_score", "sku_similarity"}, report["drifted_columns"]
    # the window (the last day, ending at the run) holds the shifted answers only, less any that aged out of it
    assert 50 <= report["rows"] <= len(monitored["manifests"]["shifted"]), report["rows"]
    drifted = {c["column"]: c for c in report["columns"] if c["drifted"]}
    assert set(drifted) == set(report["drifted_columns"]) | set(report.get("watch_drifted") or [])
    for column in report["drifted_columns"]:
        c = drifted[column]
        assert c["trigger"] and c["score"] < c["threshold"], c          # a K-S p-value under its threshold
    blur = next(c for c in report["columns"] if c["column"] == "blur_score")
    assert blur["current_mean"] > blur["reference_mean"]                 # more blur, as shifted

    html, doc_path = Path(report["html"]), Path(report["json"])
    assert html.is_file() and html.is_relative_to(repo / "monitoring" / "reports")
    doc = json.loads(doc_path.read_text())["reviewops"]
    assert doc["status"] == "drift" and doc["until"] == report["until"] and doc["rows"] == report["rows"]
    assert doc["drifted_columns"] == report["drifted_columns"] and doc["html"] == str(html)

    alerts = [json.loads(line) for line in (repo / "monitoring" / "alerts.jsonl").read_text().splitlines()]
    mine = [a for a in alerts if a["until"] == report["until"]]
    assert len(mine) == 1 and mine[0]["asset"] == DRIFT.rstrip("/") and mine[0]["columns"] == report["drifted_columns"]
    assert mine[0]["report"] == str(html) and mine[0]["webhook"]["status"] == 204
    posted = [p for p in monitored["webhook"].received if p["json"]["until"] == report["until"]]
    assert len(posted) == 1 and posted[0]["json"]["columns"] == report["drifted_columns"]

    signal = only(result, "signal_retrain")
    assert signal["state"] == "success" and signal["result"]["drifted"] is True
    assert result["events"] == [{"uri": DRIFT, "extra": {"report": str(html)}, "task": "signal_retrain"}]
    assert shifted["queued_before"] == [] and result["queued"] == [["retrain", DRIFT]]
    assert queued(shifted["env"]) == [["retrain", DRIFT]]                # still waiting for the scheduler


def test_unshifted_traffic_gives_no_alarm_no_event_and_queues_nothing(quiet, monitored):
    result, repo = quiet["result"], quiet["repo"]
    assert result["state"] == "success", result["log"]
    report = only(result, "drift")["result"]
    assert report["status"] == "no_drift" and report["drifted"] is False and report["drifted_columns"] == [], report
    assert 50 <= report["rows"] <= len(monitored["manifests"]["live"])
    assert Path(report["json"]).is_file() and report["alert"] is None
    assert not (repo / "monitoring" / "alerts.jsonl").exists() or all(
        json.loads(line)["until"] != report["until"]
        for line in (repo / "monitoring" / "alerts.jsonl").read_text().splitlines())
    assert only(result, "signal_retrain")["state"] == "skipped"
    assert result["events"] == [] and quiet["queued_before"] == [] and result["queued"] == []
    assert dt.datetime.fromisoformat(report["until"]) > monitored["now"]   # the same window as the shifted run's
