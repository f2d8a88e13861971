"""The shared evaluation module and the pure pieces of the families, on hand-made numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.train.evaluate import (binary_metrics, pr_curve, threshold_for_recall, threshold_for_weighted_recall,
                                      write_json)
from pipelines.serve.decision import sku_alarm, sku_candidates, sku_scores
from pipelines.train.evaluate import UNCALIBRATED
from pipelines.train.families.sku import (batch_hard_triplet, calibrate_alarm, calibrate_frame, confusable, every_claim,
                                         every_claim_recall, holdout_skus, match, pk_batches, scored_frame)


def test_threshold_reaches_the_recall_target_and_no_lower():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    labels = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0], bool)
    t = threshold_for_recall(scores, labels, 0.8)      # 5 positives: 4 must be caught
    assert t == 0.4
    m = binary_metrics(scores, labels, t)
    assert m["recall"] == 0.8 and m["precision"] == 4 / 6 and m["false_positive_rate"] == 2 / 5
    assert threshold_for_recall(scores, labels, 1.0) == 0.1
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_recall(scores, np.zeros(10, bool), 0.9)


def test_a_confidence_bound_asks_for_more_caught_positives_the_fewer_there_are():
    from pipelines.train.evaluate import recall_lower_bound

    assert recall_lower_bound(9, 10, 0.0) == 0.9 and recall_lower_bound(0, 10, 0.7) == 0.0
    assert recall_lower_bound(9, 10, 0.7) < recall_lower_bound(90, 100, 0.7) < 0.9      # more positives, tighter
    assert recall_lower_bound(100, 100, 0.7) == pytest.approx(0.3 ** (1 / 100))         # all caught: (1 - c)^(1/n)
    rng = np.random.default_rng(1)
    for n in (20, 100, 400):
        scores, labels = rng.random(2 * n), np.r_[np.ones(n, bool), np.zeros(n, bool)]
        point = threshold_for_recall(scores, labels, 0.9)
        bound = threshold_for_recall(scores, labels, 0.9, confidence=0.7)
        caught = int((scores[labels] >= bound).sum())
        assert bound <= point and recall_lower_bound(caught, n, 0.7) >= 0.9           # the bound reaches the target
        assert caught == 1 or recall_lower_bound(caught - 1, n, 0.7) < 0.9            # ...and catches no more than needed
    few = np.r_[np.linspace(0.5, 1.0, 10), np.zeros(5)]
    assert threshold_for_recall(few, np.r_[np.ones(10, bool), np.zeros(5, bool)], 0.98, 0.7) == 0.5   # unreachable: all


def test_the_middle_of_the_gap_catches_the_positives_that_cost_no_false_alarm():
    """gap_middle: the threshold goes halfway (logit) between the highest validation negative under it and the
    lowest score above that negative; a positive the target let go but above every negative under the threshold is
    caught, and the validation negatives flagged stay those at the threshold."""
    from pipelines.train.evaluate import calibrate, gap_middle

    logit = lambda p: np.log(p / (1 - p))
    sig = lambda z: 1 / (1 + np.exp(-z))
    scores = sig(np.array([6.0, 5.5, 5.0, 4.5, 1.0, -1.0, -3.0, -4.0]))
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    t = gap_middle(scores, labels, float(sig(4.5)))                 # the target asked for four of five positives
    assert logit(t) == pytest.approx(0.0)                            # between -1 and the positive at 1, not at 1.75
    assert (scores[labels] >= t).all() and (scores[~labels] >= t).sum() == 0
    assert gap_middle(scores, labels, float(sig(6.0))) == pytest.approx(t)   # whatever the target let go above -1
    assert gap_middle(scores[:5], labels[:5], float(sig(4.5))) == pytest.approx(sig(4.5))   # no negative under it
    thr, source = calibrate(scores, labels, 0.8, middle=True)
    assert thr == pytest.approx(t) and "middle" in source
    inside = np.r_[scores, sig(2.0)], np.r_[labels, False]           # a negative in the gap: the gap ends there
    assert logit(gap_middle(*inside, float(sig(4.5)))) == pytest.approx(3.25)


def test_a_weighted_threshold_counts_photos_not_claims():
    rng = np.random.default_rng(3)
    scores, labels = rng.random(40), np.r_[np.ones(20, bool), np.zeros(20, bool)]
    for confidence in (0.0, 0.7):                     # unit weights: the labelled rule
        assert threshold_for_weighted_recall(scores[labels], np.ones(20), 20, 0.9, confidence) == \
            threshold_for_recall(scores, labels, 0.9, confidence)
    # four photos; the third carries three claims of weight 1/3: 3 of 4 photos' weight is caught at 0.5, not 0.7
    claims, weights = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1]), np.array([1, 1, 1 / 3, 1 / 3, 1 / 3, 1])
    assert threshold_for_weighted_recall(claims, weights, 4, 0.75) == 0.5
    assert threshold_for_weighted_recall(claims, weights, 4, 1.0) == 0.1
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_weighted_recall(np.array([]), np.array([]), 0, 0.9)


def _claims_frame():
    """Photos of nova-12-blue and nova-12-pro-blue (layout twins; nova-12-black is nova-12-blue's colour twin,
    slate-pro-silver another product) with their candidates, one labelled wrong claim, one outside product."""
    rows = [("nova-12-blue", "nova-12-blue", [["nova-12-blue", 0.9], ["nova-12-pro-blue", 0.7], ["nova-12-black", 0.5]]),
            ("nova-12-blue", "nova-12-blue", [["nova-12-pro-blue", 0.8], ["nova-12-blue", 0.75], ["nova-12-black", 0.3]]),
            ("nova-12-pro-blue", "nova-12-pro-blue", [["nova-12-pro-blue", 0.9], ["nova-12-blue", 0.85],
                                                      ["slate-pro-silver", 0.2]]),
            ("nova-12-pro-blue", "nova-12-blue", [["nova-12-pro-blue", 0.9], ["nova-12-blue", 0.4],
                                                  ["nova-12-black", 0.3]]),
            ("nova-13-teal", "nova-12-pro-blue", [["nova-12-pro-blue", 0.6], ["nova-12-blue", 0.55],
                                                  ["nova-12-black", 0.2]])]
    d = pd.DataFrame({"listing_id": [f"l{i}" for i in range(len(rows))], "sku_id": [r[0] for r in rows],
                      "claimed_sku": [r[1] for r in rows]})
    enrolled = {"nova-12-blue", "nova-12-black", "nova-12-pro-blue", "slate-pro-silver"}
    return scored_frame(d, [r[2] for r in rows], enrolled, enrolled), enrolled


def test_every_claim_of_every_photo_each_kind_weighing_one_per_photo():
    s, enrolled = _claims_frame()
    claims = every_claim(s, enrolled)
    assert set(claims["photo"]) == {0, 1, 2, 3}                      # the outside product is in no gallery
    shown = s["sku_id"].to_numpy()
    assert not (shown[claims["photo"]] == claims["claim"]).any()     # a photo's own SKU is never a wrong claim
    assert claims.groupby(["photo", "kind"])["weight"].sum().eq(1.0).all()
    first = claims[claims["photo"] == 0].set_index("claim")["kind"].to_dict()
    assert first == {"nova-12-black": "colour", "nova-12-pro-blue": "layout", "slate-pro-silver": "other"}
    # photo 1's own SKU trails nova-12-pro-blue: a claim of nova-12-pro-blue leads by 0.05, so a margin
    # threshold of 0 misses that layout claim of 4 (2 of 4 photos x 1 layout claim each: 1 missed)
    recall = every_claim_recall(s, {"margin": 0.0, "similarity": -1.0}, enrolled)
    assert recall["photos"] == 4 and recall["layout_variant"] == 0.75 and recall["colour_variant"] == 1.0


def test_every_claim_calibration_reaches_the_target_over_every_photo():
    s, enrolled = _claims_frame()
    targets = {"sku_mismatch": 1.0, "unknown_sku": 1.0}
    labelled, _ = calibrate_frame(s, targets, 0.0)
    assert labelled["margin"] == pytest.approx(-0.5)                 # the one labelled wrong claim
    # the labelled wrong claim is a layout swap: kinds weigh as labelled, so layout claims alone count
    thr, source = calibrate_frame(s, targets, 0.0, "every", enrolled)
    assert thr["margin"] == pytest.approx(0.05)                      # the layout claim that leads by 0.05
    assert source["margin"].startswith("validation: every wrong claim") and "layout 1.00" in source["margin"]
    assert every_claim_recall(s, thr, enrolled)["layout_variant"] == 1.0
    thr, source = calibrate_frame(s, {"sku_mismatch": 0.5, "unknown_sku": 1.0}, 0.0, "every_kind", enrolled)
    recall = every_claim_recall(s, thr, enrolled)
    assert min(recall[k] for k in ("colour_variant", "layout_variant", "other")) >= 0.5
    assert "each swap kind on its own" in source["margin"]
    none = calibrate_frame(s[s["outside"]], targets, 0.0, "every", enrolled)   # no photo of an enrolled SKU
    assert none == ({"margin": None, "similarity": None}, {"margin": UNCALIBRATED, "similarity": UNCALIBRATED})


def test_alarm_thresholds_meet_each_kinds_target_on_its_own_positives():
    # 10 wrong claims (margins), 10 outside-catalogue products (two already caught by their margin), 30 genuine
    wrong_margins = np.array([-0.9, -0.8, -0.7, -0.6, -0.5, -0.4, -0.3, -0.2, -0.1, 0.05])
    outside_sims = np.array([0.10, 0.20, 0.30, 0.40, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90])
    outside_margins = np.array([0.1] * 8 + [-0.95, -0.95])
    margin = np.concatenate([wrong_margins, outside_margins, np.full(30, 0.3)])
    similarity = np.concatenate([np.full(10, 0.5), outside_sims, np.full(30, 0.95)])
    wrong = np.r_[np.ones(10, bool), np.zeros(40, bool)]
    outside = np.r_[np.zeros(10, bool), np.ones(10, bool), np.zeros(30, bool)]
    thr, source = calibrate_alarm(margin, similarity, wrong, outside, {"sku_mismatch": 0.9, "unknown_sku": 0.9})
    assert thr["margin"] == -0.1 and source == {"margin": "validation", "similarity": "validation"}
    assert (wrong_margins <= thr["margin"]).mean() == 0.9
    # 9 of 10 outside products: 2 caught by the margin (0.80, 0.90), 7 more by similarity: the 7th lowest is 0.6
    assert thr["similarity"] == 0.6
    caught = (outside_margins <= thr["margin"]) | (outside_sims <= thr["similarity"])
    assert caught.mean() == 0.9
    assert calibrate_alarm(margin, similarity, wrong, outside, {"sku_mismatch": 0.9, "unknown_sku": 0.2})[0]["similarity"] == -1.0
    thr, source = calibrate_alarm(margin, similarity, wrong, np.zeros(50, bool), {"sku_mismatch": 0.9, "unknown_sku": 0.9})
    assert thr["similarity"] is None and source["similarity"] == UNCALIBRATED
    none = calibrate_alarm(margin, similarity, np.zeros(50, bool), outside, {"sku_mismatch": 0.9, "unknown_sku": 0.9})
    assert none == ({"margin": None, "similarity": None}, {"margin": UNCALIBRATED, "similarity": UNCALIBRATED})


def test_the_alarm_rule():
    thr = {"margin": -0.1, "similarity": 0.6}
    c = [["a", 0.9], ["b", 0.85], ["c", 0.3]]
    assert sku_scores(c, "a") == (0.9, pytest.approx(0.05)) and sku_scores(c, "b") == (0.85, pytest.approx(-0.05))
    assert sku_alarm(c, "a", thr) is None and sku_alarm(c, "b", thr) is None       # a look-alike within the margin
    assert sku_alarm(c, "c", thr) == "sku_mismatch"                                 # another SKU clearly better
    assert sku_scores(c, "zz") == (None, pytest.approx(0.3 - 0.9))                  # beyond the candidates
    assert sku_alarm(c, "zz", thr) == "sku_mismatch"
    weak = [["a", 0.55], ["b", 0.2]]
    assert sku_alarm(weak, "a", thr) == "unknown_sku"                                # nothing enrolled looks like it
    assert sku_alarm(c, None, thr) is None and sku_alarm(weak, None, thr) == "unknown_sku"
    assert sku_alarm(c, "a", thr, known={"a", "b", "c"}) is None
    assert sku_alarm(c, "x", thr, known={"a", "b", "c"}) == "unknown_sku"           # not in the gallery at all
    assert sku_alarm(c, "a", {"margin": None, "similarity": 0.6}) == "sku_mismatch"  # uncalibrated: alarms
    assert sku_alarm(c, "a", {"margin": -0.1, "similarity": None}) == "unknown_sku"
    assert sku_alarm([["a", 0.75], ["b", 0.5]], "a", {"margin": 0.25, "similarity": 0.6}) == "sku_mismatch"  # at it
    # nothing enrolled looks like the photo (a real non-product photo): unknown_sku, however close the poor matches
    # are to each other, and whichever of them is claimed; it alarms exactly where the old order did
    poor = [["a", 0.41], ["b", 0.40], ["c", 0.2]]
    assert sku_alarm(poor, "a", thr) == sku_alarm(poor, "b", thr) == sku_alarm(poor, "c", thr) == "unknown_sku"
    assert sku_alarm([["b", 0.9], ["a", 0.4]], "a", thr) == "sku_mismatch"       # another SKU shown: a wrong claim


def test_pr_curve_and_json_are_readable(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = labels + rng.normal(0, 0.5, 200)
    curve = pr_curve(scores, labels)
    assert curve["recall"].is_monotonic_decreasing and curve["recall"].iloc[0] == 1.0
    path = write_json({"a": float("nan"), "b": np.float32(0.5), "c": {"d": np.int64(3)}}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": {"d": 3}}


def test_batch_hard_triplet_is_zero_when_classes_are_far_apart_and_positive_otherwise():
    labels = torch.tensor([0, 0, 1, 1])
    far = torch.tensor([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]])
    assert batch_hard_triplet(far, labels, margin=0.3).item() == 0.0
    mixed = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.1, 0.0]])
    assert batch_hard_triplet(mixed, labels, margin=0.3).item() > 4.0


def test_candidates_are_the_best_skus_by_their_closest_photo():
    gallery = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    skus = np.array(["a", "a", "b", "b"])
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.7, 0.7]]), dim=1)
    best = match(query, gallery, skus, 5)
    assert [c[0][0] for c in best[:2]] == ["a", "b"] and best[0][0][1] > 0.99
    assert all(len(c) == 2 and c[0][1] >= c[1][1] for c in best)                  # one entry per SKU, best first
    sims = (query @ gallery.T).numpy()
    for row, cands in zip(sims, best):                  # a SKU scores its closest gallery photo
        assert all(score == pytest.approx(row[skus == sku].max()) for sku, score in cands)
    assert [c[0] for c in best[2]] == ["a", "b"]           # a tie goes to the SKU first in the gallery
    assert sku_candidates(np.array([0.5, 0.5, 0.5]), ["x", "y", "x"], 1) == [["x", 0.5]]   # ties: gallery order


def test_pk_batches_hold_p_skus_of_k_photos_and_depend_only_on_the_epoch():
    labels = np.repeat(np.arange(10), 7)
    sampler = pk_batches(labels, p=4, k=3, seed=1)
    batches = sampler(0)
    assert len(batches) == len(labels) // 12
    for b in batches:
        assert len(b) == 12 and len(set(labels[b])) == 4
    assert sampler(0) == batches and sampler(1) != batches


def test_twin_batches_pair_half_their_skus_with_a_confusable_one():
    labels = np.repeat(np.arange(12), 6)
    pairs = np.array([[c ^ 1] for c in range(12)])                  # each class's one neighbour: 0-1, 2-3, ...
    sampler = pk_batches(labels, p=6, k=3, seed=1, neighbours=lambda epoch: None if epoch == 0 else pairs)
    assert sampler(0) == pk_batches(labels, p=6, k=3, seed=1)(0)    # no neighbours yet: random SKUs as before
    for b in sampler(1):
        classes = set(labels[b])
        assert len(b) == 18 and len(classes) == 6
        assert all(c ^ 1 in classes for c in classes)                # every SKU came with its twin
    assert sampler(1) == sampler(1)


def test_confusable_skus_are_the_nearest_classifier_rows():
    classifier = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0.8, 0.3]]))
    net = type("Net", (), {"classifier": classifier})()
    near = confusable(net, 1)
    assert near(0) is None and confusable(net, 0)(3) is None         # untrained rows, or twins off
    assert near(1)[:, 0].tolist() == [1, 0, 3, 2]


def test_holdout_skus_are_stable_and_leave_the_rest(tmp_path):
    from pipelines.params import load_params

    params = load_params()
    skus = [f"s{i}" for i in range(30)]
    held = holdout_skus(skus, params)
    assert len(held) == params.train.sku.holdout_skus and set(held) < set(skus)
    assert holdout_skus(list(reversed(skus)), params) == held          # order of arrival does not matter
    grown = holdout_skus(skus + ["s99"], params)                       # a new SKU can only displace, never reshuffle
    assert set(grown) - {"s99"} <= set(held)
