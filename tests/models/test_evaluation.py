"""The shared evaluation module and the pure pieces of the families, on hand-made numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.train.evaluate import binary_metrics, pr_curve, threshold_for_recall, write_json
from pipelines.serve.decision import sku_alarm
from pipelines.train.evaluate import UNCALIBRATED
from pipelines.train.families.sku import (alarm_score, alarms, batch_hard_triplet, holdout_skus, knn_predict, mismatch_threshold,
                                   pk_batches)


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


def test_mismatch_threshold_meets_each_kinds_target_on_its_own_positives():
    # 10 wrong claims all predicted as another SKU (alarm score 2), 10 unknown SKUs scored -similarity
    unknown_sims = np.array([0.70, 0.75, 0.80, 0.82, 0.85, 0.88, 0.90, 0.92, 0.95, 0.98])
    score = np.concatenate([np.full(10, 2.0), -unknown_sims, np.full(30, -0.99)])
    wrong = np.r_[np.ones(10, bool), np.zeros(40, bool)]
    unknown = np.r_[np.zeros(10, bool), np.ones(10, bool), np.zeros(30, bool)]
    targets = {"sku_mismatch": 0.9, "unknown_sku": 0.9}
    # one threshold over both kinds at 0.9 would stop at the 18th of 20 positives and miss two unknown SKUs
    assert threshold_for_recall(score, wrong | unknown, 0.9) == -0.92
    thr, source = mismatch_threshold(score, wrong, unknown, targets)
    assert thr == 0.95 and source == "validation"        # 9 of 10 unknown SKUs at 0.9: the 9th similarity
    assert (unknown_sims <= 0.92).mean() == 0.8 and (unknown_sims <= thr).mean() == 0.9
    assert mismatch_threshold(score, wrong, unknown, {"sku_mismatch": 0.9, "unknown_sku": 0.5})[0] == 0.85
    thr, source = mismatch_threshold(score, wrong, np.zeros(50, bool), targets)
    assert thr == -1.0 and "no unknown_sku positive" in source      # prediction mismatches alone suffice
    assert mismatch_threshold(score, np.zeros(50, bool), np.zeros(50, bool), targets) == (None, UNCALIBRATED)


def test_the_alarm_evaluation_measures_is_the_one_the_service_raises():
    rng = np.random.default_rng(3)
    pred = rng.choice(["a", "b"], 200)
    claimed = rng.choice(["a", "b"], 200)
    top1 = rng.uniform(0.3, 1.0, 200).round(2)
    for thr in (None, -1.0, 0.6, 0.8):
        want = np.array([sku_alarm(p, s, c, thr) is not None for p, s, c in zip(pred, top1, claimed)])
        assert np.array_equal(alarms(pred, top1, claimed, thr), want)
        if thr is not None:
            assert np.array_equal(alarm_score(pred, claimed, top1) >= -thr, want)
    assert sku_alarm("a", 0.9, "a", 0.8) is None and sku_alarm("a", 0.8, "a", 0.8) == "sku_mismatch"
    assert sku_alarm("b", 0.99, "a", 0.8) == "sku_mismatch" and sku_alarm("a", 0.5, None, 0.8) == "unknown_sku"
    assert sku_alarm("a", 0.99, "zz", 0.8, known={"a"}) == "unknown_sku"


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


def test_knn_vote_and_alarm():
    gallery = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    skus = np.array(["a", "a", "b", "b"])
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.7, 0.7]]), dim=1)
    pred, top1, order = knn_predict(query, gallery, skus, k=3)
    assert list(pred[:2]) == ["a", "b"] and top1[0] > 0.99 and order.shape == (3, 4)
    score = alarm_score(pred, np.array(["a", "a", "a"]), top1)
    assert score[1] == 2.0 and score[0] < score[2] < 1.0   # wrong claim is certain; the ambiguous photo is less sure


def test_pk_batches_hold_p_skus_of_k_photos_and_depend_only_on_the_epoch():
    labels = np.repeat(np.arange(10), 7)
    sampler = pk_batches(labels, p=4, k=3, seed=1)
    batches = sampler(0)
    assert len(batches) == len(labels) // 12
    for b in batches:
        assert len(b) == 12 and len(set(labels[b])) == 4
    assert sampler(0) == batches and sampler(1) != batches


def test_holdout_skus_are_stable_and_leave_the_rest(tmp_path):
    from pipelines.params import load_params

    params = load_params()
    skus = [f"s{i}" for i in range(30)]
    held = holdout_skus(skus, params)
    assert len(held) == params.train.sku.holdout_skus and set(held) < set(skus)
    assert holdout_skus(list(reversed(skus)), params) == held          # order of arrival does not matter
    grown = holdout_skus(skus + ["s99"], params)                       # a new SKU can only displace, never reshuffle
    assert set(grown) - {"s99"} <= set(held)
