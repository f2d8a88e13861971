"""Blur: a regressor of the annotator blur score in [0, 1] (``train.blur.loss``: MSE on the sigmoid, or
cross-entropy against the score as a soft target), against the usual tool, the
variance of the Laplacian (OpenCV), measured on the same split.

Photos whose three votes contradict each other (a 0 and a 2) carry no reliable score: they are
dropped from training and from evaluation. The flag threshold on the predicted score is chosen on
validation so that blurred photos (annotator score >= labels.blur_threshold) reach
``recall_targets.blur``; the business can move it later without retraining.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import binary_metrics, pr_curve, calibrate, write_metrics, write_plot
from pipelines.params import Params
from pipelines.train.evaluate import metric
from pipelines.train.families import common, scalar

FAMILY = "blur"


def usable(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["blur_dropped"]].reset_index(drop=True)


def _spearman(pred: np.ndarray, y: np.ndarray) -> float:
    return float(spearmanr(pred, y).statistic) if len(y) > 2 and np.ptp(y) > 0 else -1.0


def real_samples(params: Params):
    """``(n, size, seed) -> Samples``: crops of real_photos.train blurred over the whole range (Gaussian and motion)
    with targets that keep rising with the strength (:func:`pipelines.data.real_photos.blur_target`)."""
    from pipelines.data.real_photos import blur_samples

    rp = params.real_photos
    return lambda n, size, seed: blur_samples(rp.train, n, size, seed, rp.train_max_sigma, rp.train_max_motion)


def train(root: Path, params: Params) -> dict:
    return scalar.train_scalar(FAMILY, root, params, usable, lambda d: d["blur_score"].to_numpy(np.float32),
                               params.train.blur.loss, _spearman, salt=2, extra=real_samples(params),
                               camera_resize=False)


def laplacian_variance(path: str) -> float:
    """The classic sharpness measure: variance of the Laplacian of the grey image (high = sharp)."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"{path}: not a decodable image")
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def baseline_scores(df: pd.DataFrame) -> np.ndarray:
    """Blurriness from the Laplacian: -log(variance), so that higher means blurrier like the model's score."""
    return np.array([-np.log(laplacian_variance(p) + 1e-6) for p in df["path"]])


def _regression(pred: np.ndarray, y: np.ndarray) -> dict:
    both = len(y) > 2 and np.ptp(y) > 0 and np.ptp(pred) > 0
    return {"spearman": _spearman(pred, y) if both else float("nan"),
            "pearson": float(pearsonr(pred, y).statistic) if both else float("nan"),
            "mae": float(np.mean(np.abs(pred - y)))}


def _calibrate(raw_val: np.ndarray, y_val: np.ndarray):
    """Map the baseline's -log variance onto the score scale with a least-squares line fitted on validation."""
    a, b = np.polyfit(raw_val, y_val, 1) if np.ptp(raw_val) > 0 else (0.0, float(np.mean(y_val)))
    return lambda raw: np.clip(a * raw + b, 0.0, 1.0)


def _flag(scores_val, blurred_val, scores_test, blurred_test, target, confidence) -> tuple[dict, str]:
    thr, source = calibrate(scores_val, blurred_val, target, confidence)
    return binary_metrics(scores_test, blurred_test, thr), source


def evaluate(root: Path, params: Params) -> dict:
    df = common.load_frame(root)
    val, test = usable(split_frame(df, "val")), usable(split_frame(df, "test"))
    target = params.recall_targets.blur
    y_val, y_test = val["blur_score"].to_numpy(), test["blur_score"].to_numpy()
    b_val, b_test = val["blurred"].to_numpy(bool), test["blurred"].to_numpy(bool)

    model_val, model_test = (scalar.scores(FAMILY, root, params, d) for d in (val, test))
    raw_val, raw_test = baseline_scores(val), baseline_scores(test)
    to_score = _calibrate(raw_val, y_val)
    base_val, base_test = to_score(raw_val), to_score(raw_test)

    confidence = params.recall_targets.confidence
    model_flag, model_src = _flag(model_val, b_val, model_test, b_test, target, confidence)
    base_flag, base_src = _flag(base_val, b_val, base_test, b_test, target, confidence)
    record = common.read_train_record(FAMILY, root)
    metrics = {
        "test": {"model": {**_regression(model_test, y_test), "blurred": model_flag},
                 "laplacian_baseline": {**_regression(base_test, y_test), "blurred": base_flag}},
        "val": {"model": _regression(model_val, y_val), "laplacian_baseline": _regression(base_val, y_val)},
        "thresholds": {"blur": model_flag["threshold"]},
        "threshold_source": {"blur": model_src, "baseline": base_src},
        # The annotators' noise caps what any model can reach: the generator's true blur strength,
        # a perfect sensor, ranks the test photos against their annotator score only this well.
        "annotator_ceiling_spearman": _spearman(test["blur_strength"].to_numpy(), y_test),
        "spearman_vs_true_strength": {"model": _spearman(model_test, test["blur_strength"].to_numpy()),
                                      "laplacian_baseline": _spearman(base_test, test["blur_strength"].to_numpy())},
        "recall_target": target,
        "train_seconds": record["seconds"],
        "train_device": common.train_device(record),
        "test_photos": len(test),
    }
    write_metrics(FAMILY, metrics, root)
    write_plot(FAMILY, "scatter", pd.DataFrame({"annotator_score": y_test, "predicted": model_test,
                                                 "laplacian_baseline": base_test}), root)
    write_plot(FAMILY, "pr_blurred", pr_curve(model_test, b_test), root)
    return metrics


# --- what the rest asks of the family (pipelines.train.families.Family) ------------------------------

def bundle(root: Path, params: Params):
    return scalar.score_bundle(FAMILY, root)


REVIEWER_DEFECTS = ("blur",)          # what the whole reviewer measures it on (pipelines/release/reviewer.py)


def gate_values(test: dict) -> tuple[dict[str, float], float]:
    return {"blur": metric(test, "model.blurred.recall")}, 1.0 - metric(test, "model.blurred.flagged_share")


def summary(t: dict) -> str:
    return (f"Spearman {_f(t['model']['spearman'])} (Laplacian {_f(t['laplacian_baseline']['spearman'])}), "
            f"recall of blurred {_f(t['model']['blurred']['recall'])}")


def _f(value) -> str:
    return "n/a" if value is None else format(value, ".3f")
