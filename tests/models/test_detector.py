"""The detector family on the tiny project: YOLO export, one-epoch training offline, evaluation, and
the image-level checks the service shares."""

from __future__ import annotations

import math
import socket

import numpy as np
import pandas as pd
import pytest

from pipelines.data.dataset import versioned_manifest
from pipelines.train.evaluate import plots_dir, read_metrics
from pipelines.serve.decision import centring
from pipelines.train.families import detector
from pipelines.params import load_params


# --- pure functions ---------------------------------------------------------------------------------

def test_sticker_missing_score_uses_the_kth_most_confident_sticker():
    assert detector.sticker_missing_score([0.9], 1) == pytest.approx(0.1)
    assert detector.sticker_missing_score([0.2, 0.9, 0.6], 2) == pytest.approx(0.4)   # 2nd best: 0.6
    assert detector.sticker_missing_score([0.95], 2) == 1.0                           # one of two not found
    assert detector.sticker_missing_score([], 1) == 1.0
    assert detector.sticker_missing_score([0.8], 0) == 0.0                            # no sticker expected


def test_defect_targets_leave_out_the_photos_a_check_does_not_apply_to():
    df = pd.DataFrame({"stickers_expected": [2, 0, 1, 0], "sticker_missing": [True, False, False, False],
                       "category": ["phone", "headphones", "laptop", "none"], "dirt": [False, True, False, False]})
    y = detector.defect_targets(df)
    np.testing.assert_array_equal(np.isnan(y), [[False, False], [True, False], [False, False], [True, True]])
    assert y[0].tolist() == [1.0, 0.0] and y[1, 1] == 1.0 and y[2].tolist() == [0.0, 0.0]


def test_dirt_score_is_the_most_confident_dirt_box():
    assert detector.dirt_score([0.1, 0.7, 0.3]) == pytest.approx(0.7)
    assert detector.dirt_score([]) == 0.0


def test_centring_offsets_and_flag():
    """The one centring rule (pipelines.serve.decision.centring) that the detector's evaluation and the service share."""
    c = centring((0.3, 0.3, 0.7, 0.7), 0.12, 0.01)
    assert c["offset"] == [pytest.approx(0.0), pytest.approx(0.0)] and c["flag"] is False and c["cut_by_frame"] is False
    c = centring((0.4, 0.2, 0.9, 0.6), 0.12, 0.01)                                    # centre (0.65, 0.4)
    assert c["offset"] == [pytest.approx(0.15), pytest.approx(-0.1)] and c["flag"] is True
    assert centring((0.35, 0.3, 0.75, 0.7), 0.12, 0.01)["flag"] is False              # dx 0.05: within
    assert centring((0.2, 0.3, 0.995, 0.7), 0.2, 0.01)["cut_by_frame"] is True         # touches the right edge
    assert centring((0.0, 0.3, 0.5, 0.7), 0.3, 0.01)["flag"] is True                   # cut at the left edge
    assert centring(None, 0.12, 0.01) == {"offset": None, "cut_by_frame": None, "flag": True, "product_found": False}


def test_yolo_lines_keep_detector_classes_only():
    boxes = [{"label": "product", "x0": 0.2, "y0": 0.4, "x1": 0.6, "y1": 0.8},
             {"label": "prohibited:knife", "x0": 0.1, "y0": 0.1, "x1": 0.2, "y1": 0.2},
             {"label": "dirt", "x0": -0.01, "y0": 0.5, "x1": 0.1, "y1": 0.6}]               # clipped at 0
    assert detector.yolo_lines(boxes) == ["0 0.400000 0.600000 0.400000 0.400000",
                                          "2 0.050000 0.550000 0.100000 0.100000"]


def test_image_size_honours_the_profile_cap(tiny_project):
    params = load_params(tiny_project / "params.yaml")
    assert params.train.caps.image_size == 96 and detector.image_size(params) == 96
    demo = params.model_copy(update={"train": params.train.model_copy(update={"profile": "demo"})})
    assert detector.image_size(demo) == params.train.detector.imgsz


# --- the family on real data ------------------------------------------------------------------------

def test_evaluate_before_train_names_the_fix(copy_project):
    root = copy_project()
    with pytest.raises(FileNotFoundError, match="reviewops train detector"):
        detector.evaluate(root, load_params(root / "params.yaml"))


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup fails and is recorded: the detector must never reach for the network."""
    calls = []

    def blocked(host, *args, **kwargs):
        calls.append(host)
        raise OSError(f"network access to {host} during a test")

    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    return calls


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_train_and_evaluate_offline(copy_project, no_network):
    root = copy_project()
    params = load_params(root / "params.yaml")
    df = versioned_manifest(root)

    record = detector.train(root, params)
    assert (root / "models/detector/best.pt").is_file()
    assert (root / "models/detector/train.json").is_file()
    assert record["epochs"] == record["epochs_run"] == 1 and record["imgsz"] == 96 and len(record["history"]) == 1
    assert record["data"]["photos"] == len(df) and _finite(record["train_images_per_second"])
    assert (root / "models/detector/defects.pt").is_file() and record["defects"]["epochs_run"] >= 1

    # the export: train and val only, symlinked photos, labels equal to the manifest's boxes
    data = root / ".cache/yolo/data"
    for split in ("train", "val"):
        assert len(list((data / split / "images").glob("*.jpg"))) == (df["split"] == split).sum()
    assert not (data / "test").exists()
    row = next(r for r in df[df["split"] == "train"].itertuples()
               if {"product", "sticker"} <= {b["label"] for b in r.boxes})
    image = data / "train/images" / f"{row.listing_id}.jpg"
    assert image.is_symlink() and image.resolve() == (root / "data/batches" / row.batch / row.image).resolve()
    got = [line.split() for line in (data / "train/labels" / f"{row.listing_id}.txt").read_text().splitlines()]
    want = [(detector.CLASS_ID[b["label"]], b) for b in row.boxes if b["label"] in detector.CLASS_ID]
    assert len(got) == len(want)
    for (cls, *xywh), (want_cls, b) in zip(got, want):
        assert int(cls) == want_cls
        cx, cy, w, h = (b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2, b["x1"] - b["x0"], b["y1"] - b["y0"]
        np.testing.assert_allclose([float(v) for v in xywh], [cx, cy, w, h], atol=1e-6)

    metrics = detector.evaluate(root, params)
    assert set(read_metrics("detector", root)) == set(metrics) >= {"test", "val", "thresholds", "threshold_source"}
    test = metrics["test"]
    assert set(test) == {"map50", "sticker_missing", "dirt", "centring", "box_rule", "auto_pass_share"}
    assert 0.0 <= test["auto_pass_share"] <= 1.0        # the gate's no-regression criterion reads it
    assert set(test["box_rule"]) == {"sticker_missing", "dirt"}
    assert set(test["map50"]) == {"product", "sticker", "dirt", "all"} and _finite(test["map50"]["all"])
    for flag in ("sticker_missing", "dirt"):
        assert _finite(metrics["thresholds"][flag])
        assert metrics["threshold_source"][flag].startswith("validation")     # and any generated positives
        assert test[flag]["n"] > 0 and _finite(test[flag]["flagged_share"])
        curve = pd.read_csv(plots_dir("detector", root) / f"pr_{flag}.csv")
        assert list(curve.columns) == ["threshold", "recall", "precision"] and len(curve) > 0
    expected = df[df["split"] == "test"]
    assert test["sticker_missing"]["n"] == (expected["stickers_expected"] > 0).sum()
    assert test["dirt"]["n"] == test["centring"]["n"] == (expected["category"] != "none").sum()
    assert 0.0 <= test["centring"]["accuracy"] <= 1.0
    assert _finite(metrics["train_seconds"]) and metrics["data"]["photos"] == len(df)
    assert not (root / "models/detector/runs").exists() and (root / ".cache/yolo/runs").is_dir()
    assert no_network == []
