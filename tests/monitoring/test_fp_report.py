"""`reviewops fp-report` after simulated reviews (from the generator's labels): every number checked against a count
made here from the prediction log and the labels, the trend by day, misses, and the thumbnails of the top false positives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from monitoring.feedback import CHECKS, truth
from tests.monitoring.test_drift import _log

pytestmark = pytest.mark.slow


def test_per_check_rates_match_a_count_from_the_log_and_the_labels(monitored, fp_runs):
    doc = fp_runs["doc"]
    labels = pd.concat(monitored["manifests"].values()).set_index("listing_id")
    log = _log(monitored)
    expected = {}
    for _, row in log.iterrows():
        for reason in row["reasons"]:
            e = expected.setdefault(reason, {"flagged": 0, "false_positives": 0})
            e["flagged"] += 1
            e["false_positives"] += not truth(reason, labels.loc[row["listing_id"]])
    got = {c["check"]: c for c in doc["checks"]}
    assert set(expected) <= set(got)
    for check, e in expected.items():
        c = got[check]
        assert (c["flagged"], c["reviewed"], c["false_positives"]) == (e["flagged"], e["flagged"], e["false_positives"]), check
        assert c["false_positive_rate"] == pytest.approx(e["false_positives"] / e["flagged"], abs=1e-4)
        assert c["confirmed"] == e["flagged"] - e["false_positives"] and c["unreviewed"] == 0
    assert doc["predictions"] == len(log) and doc["reviewed_listings"] == (log["decision"] == "manual_review").sum()
    assert "imported 1 feedback rows" in fp_runs["imported"].stdout
    listing, missed = fp_runs["miss"]
    auto = log[log["decision"] == "auto_pass"]
    complained = {lid for lid in auto["listing_id"] if truth(missed, labels.loc[lid])}   # simulated after-sales
    assert got[missed]["misses"] == len(complained | {listing})
    assert "FP rate" in fp_runs["report"].stdout and str(fp_runs["html"]) in fp_runs["report"].stdout


def test_the_trend_has_a_rate_per_day(monitored, fp_runs):
    trend = pd.DataFrame(fp_runs["doc"]["trend"])
    assert trend["day"].nunique() >= 2                           # the two streams span two days or more
    for check, part in trend.groupby("check"):
        total = next(c for c in fp_runs["doc"]["checks"] if c["check"] == check)
        assert part["reviewed"].sum() == total["reviewed"] and part["false_positives"].sum() == total["false_positives"]
        assert ((part["rate"] - part["false_positives"] / part["reviewed"]).abs() < 1e-4).all()


def test_the_top_false_positives_show_the_archived_photos(monitored, fp_runs):
    top = fp_runs["doc"]["top_false_positives"]
    assert 0 < len(top) <= 12
    archive = (monitored["repo"] / "monitoring" / "photos").resolve()
    for t in top:
        assert t["thumbnail"] is True and Path(t["image_path"]).resolve().is_relative_to(archive)
    scored = {}
    for t in top:
        if t["score"] is not None:
            scored.setdefault(t["check"], []).append(t["score"])
    for check, scores in scored.items():
        assert scores == sorted(scores, reverse=True), check          # surest flags first
    page = fp_runs["html"].read_text()
    assert page.count("src='data:image/jpeg;base64,") == len(top)
    assert all(c in page for c in ("id=\"fp-checks\"", "id='fp-trend'", "id=\"fp-top\"", "fp-chart-0"))
    assert set(CHECKS) & {c["check"] for c in fp_runs["doc"]["checks"]}
