"""Manipulation: a binary classifier, authentic against edited (splice, clone, watermark, synthetic
region). The threshold is chosen for ``recall_targets.manipulation`` on validation's edits and, with
``recall_targets.extra_positives.manipulation``, as many more generated edited photos (:func:`calibration_edits`);
recall is reported per manipulation type on the frozen test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import (binary_metrics, calibrate_with_extra, generated_positives, pr_curve,
                                      write_metrics, write_plot)
from pipelines.data.manifest import MANIPULATION_TYPES
from pipelines.params import Params
from pipelines.train.evaluate import metric
from pipelines.serve.decision import flagged
from pipelines.train.families import common, scalar

FAMILY = "manipulation"


def _labels(df: pd.DataFrame) -> np.ndarray:
    return df["manipulated"].to_numpy(np.float32)


def _ap(pred: np.ndarray, y: np.ndarray) -> float:
    return float(average_precision_score(y, pred)) if 0 < y.sum() < len(y) else -1.0


def real_samples(params: Params):
    """``(n, size, seed) -> Samples``: authentic and visibly edited crops of real_photos.train (target 0 / 1),
    ``train.manipulation.real_edited_share`` of them edited."""
    from pipelines.data.real_photos import manipulation_samples

    return lambda n, size, seed: manipulation_samples(params.real_photos.train, n, size, seed, params.labels.visibility,
                                                      params.train.manipulation.real_edited_share,
                                                      params.train.manipulation.real_looks)


def train(root: Path, params: Params) -> dict:
    """Fit the classifier (shared harness, cached trunk features) on the versioned training split, the real samples
    and ``train.manipulation.extra_photos`` generated photos at ``extra_rates`` (edits made common, so that the
    generated photos are edited about as often as the real samples: neither looking generated nor looking real says
    "authentic"); its training record. Validation stays the versioned split."""
    return scalar.train_scalar(FAMILY, root, params, lambda d: d, _labels, "bce", _ap, salt=5, extra=real_samples(params))


CALIBRATION_SALT = 53


def calibration_edits(root: Path, params: Params, prohibited: bool = False) -> pd.DataFrame:
    """``recall_targets.extra_positives.manipulation`` generated photos with an edit drawn on every one (the
    generator's edit kinds and strengths, :func:`pipelines.train.evaluate.generated_positives`), the rows whose edit
    is labelled (visible by ``labels.visibility``).

    Validation holds about a hundred edits, and the recall target's lower bound puts the threshold at the sixth or
    seventh lowest of them: faint copy-moves whose scores differ twentyfold between training runs, while most
    clean photos score in between. Thousands of edits of the same kinds pin that quantile down."""
    photos = generated_positives(root, params, FAMILY, {"manipulation_rate": 1.0}, salt=CALIBRATION_SALT,
                                 prohibited=prohibited)
    return photos[_labels(photos).astype(bool)] if len(photos) else photos


def evaluate(root: Path, params: Params) -> dict:
    df = common.load_frame(root)
    val, test = split_frame(df, "val"), split_frame(df, "test")
    s_val, s_test = (scalar.scores(FAMILY, root, params, d) for d in (val, test))
    y_val, y_test = _labels(val).astype(bool), _labels(test).astype(bool)
    extra = calibration_edits(root, params)
    s_extra = scalar.scores(FAMILY, root, params, extra) if len(extra) else np.zeros(0)
    thr, source, calibration = calibrate_with_extra(s_val, y_val, s_extra, params.recall_targets.manipulation,
                                                    params.recall_targets.confidence, "edits")
    flags = flagged(s_test, thr)
    per_type = {}
    for kind in MANIPULATION_TYPES[1:]:
        mask = (test["manipulation_type"] == kind).to_numpy()
        per_type[kind] = {"recall": float(flags[mask].mean()) if mask.any() else float("nan"),
                          "n": int(mask.sum())}
    record = common.read_train_record(FAMILY, root)
    metrics = {"test": {"manipulated": binary_metrics(s_test, y_test, thr), "recall_by_type": per_type},
               "val": {"manipulated": binary_metrics(s_val, y_val, thr)},
               "thresholds": {"manipulation": thr}, "threshold_source": {"manipulation": source},
               "recall_target": params.recall_targets.manipulation,
               "calibration": calibration,
               "train_seconds": record["seconds"],
               "train_device": common.train_device(record)}
    write_metrics(FAMILY, metrics, root)
    write_plot(FAMILY, "pr_manipulated", pr_curve(s_test, y_test), root)
    return metrics


# --- what the rest asks of the family (pipelines.train.families.Family) ------------------------------

def bundle(root: Path, params: Params):
    return scalar.score_bundle(FAMILY, root)


REVIEWER_DEFECTS = ("manipulation",)          # what the whole reviewer measures it on (pipelines/release/reviewer.py)


def gate_values(test: dict) -> tuple[dict[str, float], float]:
    return ({"manipulation": metric(test, "manipulated.recall")},
            1.0 - metric(test, "manipulated.flagged_share"))


def summary(t: dict) -> str:
    return f"recall {_f(t['manipulated']['recall'])}, precision {_f(t['manipulated']['precision'])}"


def _f(value) -> str:
    return "n/a" if value is None else format(value, ".3f")
