"""Feedback: what POST /feedback and the CSV import accept, what they refuse (with a message saying why), the store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from monitoring.feedback import (FeedbackError, FeedbackStore, accept_feedback, parse_csv, parse_feedback,
                                 simulate_feedback, truth)

CATS = ["cash", "knife"]


def test_a_review_and_a_miss_parse_into_one_row_per_check():
    rows = parse_feedback({"listing_id": "L1", "verdicts": {"blur": True, "prohibited:cash": "false_positive"},
                           "misses": ["dirt"], "reviewer": "r17", "reviewed_at": "2026-01-05T10:31:00Z"}, CATS)
    assert [(r.check, r.kind, r.confirmed) for r in rows] == [("blur", "review", True), ("prohibited:cash", "review", False),
                                                               ("dirt", "miss", True)]
    assert rows[0].reviewed_at == dt.datetime(2026, 1, 5, 10, 31, tzinfo=dt.timezone.utc) and rows[0].source == "api"
    assert len(parse_feedback([{"listing_id": "A", "verdicts": {"blur": False}},
                               {"listing_id": "B", "misses": ["manipulation"], "source": "after_sales"}], CATS)) == 2


@pytest.mark.parametrize("payload, message", [
    ({"verdicts": {"blur": True}}, "feedback.listing_id is required"),
    ({"listing_id": "L1"}, "give verdicts"),
    ({"listing_id": "L1", "verdicts": {"blurr": True}}, "unknown check 'blurr'; known: sku_mismatch"),
    ({"listing_id": "L1", "verdicts": {"prohibited:gun": True}}, "unknown check 'prohibited:gun'"),
    ({"listing_id": "L1", "verdicts": {"blur": "maybe"}}, "must be true (confirmed defect) or false"),
    ({"listing_id": "L1", "verdicts": {"blur": 1}}, "must be true (confirmed defect) or false"),
    ({"listing_id": "L1", "verdicts": {}}, "non-empty object"),
    ({"listing_id": "L1", "misses": "dirt"}, "misses must be a non-empty list"),
    ({"listing_id": "L1", "verdicts": {"blur": True}, "colour": "red"}, "unknown field(s) ['colour']"),
    ({"listing_id": "L1", "verdicts": {"blur": True}, "reviewed_at": "yesterday"}, "ISO 8601"),
    ({"listing_id": "L1", "verdicts": {"blur": True}, "reviewed_at": "2026-01-05T10:31:00"}, "time zone"),
    ({"listing_id": 42, "verdicts": {"blur": True}}, "listing_id must be a string"),
    ("blur", "must be a JSON object"),
    ([], "is empty"),
    ([{"listing_id": "L1", "verdicts": {"blur": True}}, {"listing_id": "L2"}], "feedback[1]: give verdicts"),
])
def test_bad_feedback_is_refused_with_a_clear_message(payload, message):
    with pytest.raises(FeedbackError) as err:
        parse_feedback(payload, CATS)
    assert message in str(err.value)


def test_the_csv_import_checks_every_row_and_names_the_lines():
    good = ("listing_id,check,verdict,reviewer,reviewed_at,request_id,note\n"
            "L1,blur,confirmed,r17,2026-01-05T10:31:00Z,,\n"
            "L1,prohibited:knife,false_positive,r17,,,\n"
            "L9,dirt,missed,,,,buyer complaint #4411\n")
    rows = parse_csv(good, CATS)
    assert [(r.listing_id, r.check, r.kind, r.confirmed) for r in rows] == [
        ("L1", "blur", "review", True), ("L1", "prohibited:knife", "review", False), ("L9", "dirt", "miss", True)]
    assert rows[2].note == "buyer complaint #4411" and rows[0].source == "csv"
    bad = "listing_id,check,verdict\nL1,blur,confirmed\nL2,blurr,confirmed\n,dirt,missed\nL4,dirt,perhaps\n"
    with pytest.raises(FeedbackError) as err:
        parse_csv(bad, CATS)
    text = str(err.value)
    assert "3 bad row(s), nothing imported" in text and "line 3: unknown check 'blurr'" in text
    assert "line 4: listing_id is required" in text and "line 5: verdict must be confirmed, false_positive or missed" in text
    with pytest.raises(FeedbackError, match="header lacks"):
        parse_csv("listing,check\nL1,blur\n", CATS)
    with pytest.raises(FeedbackError, match="unknown CSV column"):
        parse_csv("listing_id,check,verdict,score\nL1,blur,confirmed,0.4\n", CATS)
    with pytest.raises(FeedbackError, match="no rows"):
        parse_csv("listing_id,check,verdict\n", CATS)


def test_post_feedback_answers_200_or_400_and_stores_only_good_input(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'log.sqlite'}")
    ok = accept_feedback(json.dumps({"listing_id": "L1", "verdicts": {"blur": False}, "misses": ["dirt"]}), store, CATS)
    assert ok == (200, {"stored": 2, "reviews": 1, "misses": 1})
    assert accept_feedback(b"{nope", store, CATS)[1]["error"] == "invalid_json"
    status, body = accept_feedback(json.dumps({"listing_id": "L2", "verdicts": {"blur": "yes"}}), store, CATS)
    assert status == 400 and body["error"] == "bad_feedback" and "verdicts['blur']" in body["detail"]
    frame = store.read()
    assert list(frame["listing_id"]) == ["L1", "L1"] and list(frame["kind"]) == ["review", "miss"]
    assert list(frame["confirmed"]) == [False, True] and frame["received"].dt.tz is not None
    store.close()


def test_simulated_reviewers_follow_the_generator_labels():
    import pandas as pd

    manifest = pd.DataFrame([
        {"listing_id": "a", "blurred": True, "claimed_sku": "x", "sku_id": "x", "new_sku": False, "category": "phone",
         "prohibited": ["cash"], "manipulated": False, "sticker_missing": False, "dirt": False, "off_centre": False},
        {"listing_id": "b", "blurred": False, "claimed_sku": "x", "sku_id": "y", "new_sku": False, "category": "phone",
         "prohibited": [], "manipulated": True, "sticker_missing": False, "dirt": True, "off_centre": False}])
    preds = pd.DataFrame([
        {"listing_id": "a", "request_id": "r1", "decision": "manual_review", "reasons": ["blur", "prohibited:knife"],
         "ts": pd.Timestamp("2026-01-05T10:00:00Z")},
        {"listing_id": "b", "request_id": "r2", "decision": "auto_pass", "reasons": [],
         "ts": pd.Timestamp("2026-01-05T11:00:00Z")}])
    rows = simulate_feedback(manifest, preds, CATS)
    got = {(r.listing_id, r.check, r.verdict) for r in rows.itertuples()}
    assert got == {("a", "blur", "confirmed"), ("a", "prohibited:knife", "false_positive"),
                   ("b", "sku_mismatch", "missed"), ("b", "dirt", "missed"), ("b", "manipulation", "missed")}
    assert truth("prohibited:cash", manifest.iloc[0]) and not truth("prohibited:knife", manifest.iloc[0])
    parse_csv(rows.to_csv(index=False), CATS)        # what it writes, the import takes
