"""Drift on the monitored project: the reference at promotion, quiet and shifted windows through `reviewops drift`,
the alert and webhook, the DAG's contract, and the false-alarm rate over 40 windows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring import alerts
from monitoring.drift import DriftError, compare, parse_window, run_drift
from monitoring.reference import features, load_reference
from pipelines.params import load_params
from tests.monitoring.conftest import SHIFT, SIZES, cli

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]
WINDOWS = 40
FALSE_ALARM_LIMIT = 2          # 5% of 40 windows


def test_reference_stores_the_outputs_of_the_promoted_models(monitored):
    """The gate only promotes (and says what comes next); `reviewops reference` stores the reference."""
    meta = monitored["validation_reference"]
    assert "reviewops reference" in monitored["gate"] and "reference:" not in monitored["gate"]
    assert "reference:" in monitored["validation_reference_cli"] and "validation split" in monitored["validation_reference_cli"]
    assert meta["models"] == monitored["tags"] and len(meta["models"]) == 5
    assert meta["source"].startswith("validation split") and meta["rows"] > 0
    assert meta["categories"] == ["cash", "knife"]


def test_reference_rows_are_the_promoted_models_outputs(monitored):
    """The stored reference rows are the production models' scores of those photos: exactly the production bundles'
    answers through the service's path (at the precision each graph is served), and the same bundles' FP32 graphs
    checked against the torch models (another code path). How far an INT8 graph may move the scores is the reviewer
    stage's decision, judged by the whole reviewer's figures (tests/release/test_quantize.py), not a bound here."""
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.families import scalar
    from pipelines.train.review import review
    from tests.monitoring.conftest import manifest

    repo = monitored["repo"]
    params = load_params(repo / "params.yaml")
    ref, meta = load_reference(repo, params)
    assert meta["rows"] == len(ref) == SIZES["ref"] and "batch" in meta["source"] and meta["models"] == monitored["tags"]
    assert "reference: 200 rows" in monitored["reference_cli"]
    photos = manifest(monitored["traffic"] / "ref").head(24)
    served = ref.set_index("listing_id").loc[list(photos["listing_id"])]
    production = [raw for _, raw in review(ReviewerModels(monitored["bundles"], threads=2), photos, params)]
    fp32 = [raw for _, raw in review(ReviewerModels(monitored["bundles"], threads=2, int8=()), photos, params)]
    for family, column in (("blur", "blur_score"), ("manipulation", "manipulation_score")):
        assert np.allclose(served[column].to_numpy(), [raw[family] for raw in production], atol=1e-4), family
        deviation = np.abs(np.array([raw[family] for raw in fp32]) - scalar.scores(family, repo, params, photos))
        assert deviation.max() < 1e-3, (family, deviation.round(4).tolist())
    assert set(ref["decision"]) <= {"auto_pass", "manual_review"} and ref["sku_similarity"].between(-1, 1).all()


def _log(monitored) -> pd.DataFrame:
    from monitoring.prediction_log import PredictionLog, resolve_url

    repo = monitored["repo"]
    log = PredictionLog(resolve_url(load_params(repo / "params.yaml").serving.prediction_log, repo))
    try:
        return log.read()
    finally:
        log.close()


def _columns(doc) -> dict:
    return {c["column"]: c for c in doc["reviewops"]["columns"]}


def test_the_unshifted_day_raises_no_alarm(drift_runs):
    doc = drift_runs["quiet_doc"]["reviewops"]
    assert "NO DRIFT" in drift_runs["quiet"].stdout and drift_runs["quiet"].returncode == 0
    assert doc["status"] == "no_drift" and doc["drifted"] is False and doc["rows"] == SIZES["live"]
    cols = _columns(drift_runs["quiet_doc"])
    for name in ("blur_score", "sku_similarity"):
        assert cols[name]["trigger"] and cols[name]["method"] == "ks"
        assert cols[name]["score"] >= cols[name]["threshold"], cols[name]
    assert doc["alert"] is None
    assert not [p for p in monitored_posts(drift_runs) if p["json"]["until"] == doc["until"]]


def monitored_posts(drift_runs) -> list:
    return drift_runs["webhook"].received


def test_the_shifted_day_is_flagged_on_blur_or_similarity_and_alerts(drift_runs, monitored):
    shifted = drift_runs["shifted"]
    doc = drift_runs["shifted_doc"]["reviewops"]
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr          # --fail-on-drift
    assert "DRIFT" in shifted.stdout and f"retrain is signalled by the {alerts.DRIFT_ASSET} asset" in shifted.stdout
    assert doc["status"] == "drift" and doc["rows"] == SIZES["shifted"]
    assert set(doc["drifted_columns"]) & {"blur_score", "sku_similarity"}, doc["drifted_columns"]
    cols = _columns(drift_runs["shifted_doc"])
    assert cols["blur_score"]["current_mean"] > cols["blur_score"]["reference_mean"]    # more blur, as shifted
    # Evidently's own verdicts are in the JSON: one drift test per column, FAIL where we say DRIFT
    tests = {t["metric_config"]["params"]["column"]: t["status"] for t in drift_runs["shifted_doc"]["evidently"]["tests"]
             if t["metric_config"]["params"].get("type", "").endswith("ValueDrift")}
    assert {c for c, s in tests.items() if s == "FAIL"} == {c for c, v in cols.items() if v["drifted"]}
    # the alert record and the webhook call
    recorded = [a for a in alerts.read_alerts(monitored["repo"], load_params(monitored["repo"] / "params.yaml"))
                if a["until"] == doc["until"]]
    assert len(recorded) == 1 and recorded[0]["columns"] == doc["drifted_columns"]
    assert recorded[0]["asset"] == "reviewops://drift" and recorded[0]["webhook"]["status"] == 204
    posted = [p for p in monitored["webhook"].received if p["json"]["until"] == doc["until"]]
    assert len(posted) == 1 and posted[0]["content_type"] == "application/json"
    assert posted[0]["json"]["columns"] == doc["drifted_columns"] and posted[0]["json"]["report"] == doc["html"]
    assert Path(doc["html"]).is_file() and Path(doc["html"]).parent.name == monitored["now"].strftime("%Y-%m-%d")


def test_the_drift_dag_task_returns_drifted_for_the_asset_event(drift_runs, monitored):
    """`pipelines.app.monitors.drift` (the DAG's task) over the last day: drifted, so retrain is signalled."""
    from pipelines.app import monitors

    out = monitors.drift(monitored["repo"], window="1d")
    assert out["drifted"] is True and out["asset"] == "reviewops://drift" and Path(out["html"]).is_file()
    json.dumps(out)                                                    # XCom-able


def test_an_empty_window_gives_no_verdict_and_bad_input_is_refused(monitored):
    repo = monitored["repo"]
    result = run_drift(repo, "6h", until=monitored["now"] - dt.timedelta(days=5), workspace=False)
    assert result.status == "insufficient_data" and not result.drifted and result.alert is None
    assert "fewer than monitoring.min_rows" in result.message and Path(result.json).is_file()
    with pytest.raises(DriftError, match="bad window"):
        parse_window("yesterday")
    assert parse_window("36h") == dt.timedelta(hours=36)
    bad = cli(repo, monitored["env"], "drift", "--window", "1 fortnight", check=False)
    assert bad.returncode == 2 and "bad window" in bad.stderr


def test_rows_of_other_models_and_smoke_requests_are_left_out(monitored):
    from monitoring.drift import _select

    rows = _log(monitored).head(6).copy()
    rows.loc[0, "request_id"] = "smoke-abc"
    rows.at[1, "models"] = {**monitored["tags"], "blur": "reviewops-blur:older"}
    kept, excluded = _select(rows, monitored["tags"])
    assert len(kept) == 4 and sum(excluded.values()) == 2
    assert any("other models" in k for k in excluded) and "deploy smoke requests" in excluded


def test_false_alarms_over_40_windows_and_detection_of_the_shift(monitored):
    """The alarm decision (`compare`, the trigger columns' Evidently K-S tests) on 40 windows without drift and 40 with.

    What it measures: all 350 unshifted answers of the real (tiny) reviewer (the 200 reference
    photos and the 150 live ones) are one sample of the undrifted distribution. Each of the 40
    windows splits it at random into a reference of 200 and a disjoint window of 150, two
    independent samples of the same distribution, so a flagged window is a false alarm. The
    windows reuse the same 350 answers, so they are not independent: the count has more spread
    than a binomial one, its expectation is the per-window false-alarm rate. The 40 shifted
    windows pair a random 200 of the unshifted answers with 100 of the 150 shifted ones.
    """
    repo = monitored["repo"]
    params = load_params(repo / "params.yaml")
    ref, meta = load_reference(repo, params)
    log = _log(monitored)
    live = features(log[log["request_id"].str.startswith("live-")], meta["categories"])
    shifted = features(log[log["request_id"].str.startswith("shifted-")], meta["categories"])
    pool = pd.concat([ref[live.columns], live], ignore_index=True)
    rng = np.random.default_rng(20260101)
    quiet, caught, p_values = 0, 0, []
    for _ in range(WINDOWS):
        order = rng.permutation(len(pool))
        found = compare(pool.iloc[order[:200]].reset_index(drop=True), pool.iloc[order[200:]].reset_index(drop=True),
                        params, triggers_only=True)
        quiet += found.drifted
        p_values.append({c.column: c.score for c in found.columns})
        reference = pool.iloc[rng.permutation(len(pool))[:200]].reset_index(drop=True)
        window = shifted.iloc[rng.permutation(len(shifted))[:100]].reset_index(drop=True)
        caught += compare(reference, window, params, triggers_only=True).drifted
    figures = {"windows": WINDOWS, "false_alarms": int(quiet), "false_alarm_rate": quiet / WINDOWS,
               "shifted_windows_flagged": int(caught), "detection_rate": caught / WINDOWS, "shift": SHIFT,
               "trigger_thresholds": {c: v.threshold for c, v in params.monitoring.columns.items() if v.trigger},
               "median_quiet_p_values": {c: float(np.median([p[c] for p in p_values])) for c in p_values[0]}}
    out = PROJECT / "monitoring" / "reports" / "figures"          # kept beside the screenshots
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift_false_alarms_tiny.json").write_text(json.dumps(figures, indent=1))
    (out / "fixture_seconds.json").write_text(json.dumps(monitored["timings"], indent=1))
    print(json.dumps(figures))
    assert quiet <= FALSE_ALARM_LIMIT, figures
    assert caught >= 36, figures          # the same decision does flag a shifted stream (>= 90% of windows)
