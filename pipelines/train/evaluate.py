"""The one evaluation module of every family: thresholds for a recall target, binary metrics,
curves for ``dvc plots``, and the metrics file ``dvc metrics`` reads.

Thresholds are always chosen on validation scores; the frozen test split is only ever measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.serve.decision import flagged

MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


def model_dir(family: str, root: str | Path | None = None) -> Path:
    return Path(root or Path.cwd()) / MODELS_DIR / family


def metrics_path(family: str, root: str | Path | None = None) -> Path:
    return Path(root or Path.cwd()) / METRICS_DIR / f"{family}.json"


def plots_dir(family: str, root: str | Path | None = None) -> Path:
    return Path(root or Path.cwd()) / PLOTS_DIR / family


def recall_lower_bound(caught: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a recall ``caught / n`` at ``confidence`` (0: the point estimate)."""
    if confidence <= 0.0:
        return caught / n
    if caught == 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, caught, n - caught + 1))


def threshold_for_recall(scores, labels, target: float, confidence: float = 0.0) -> float:
    """The highest threshold t such that flagging ``score >= t`` catches enough of the positives.

    Enough: the lower confidence bound of the recall (:func:`recall_lower_bound`) reaches ``target``; with
    few positives no count may reach it, and then every validation positive must be caught. At
    ``confidence`` 0 that is the point estimate: at least ``target`` of the positives. The bound keeps
    test recall above the target run after run where a point estimate over 40-140 positives did not
    (the detector's sticker recall: 0.981 on validation, 0.935 on test; docs/training.md).
    With no positive on validation there is nothing to calibrate on: that is an error, not a guess.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos = np.sort(scores[labels])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive example on validation: cannot choose a threshold for a recall target")
    need = max(1, math.ceil(target * len(pos) - 1e-9))
    while need < len(pos) and recall_lower_bound(need, len(pos), confidence) < target:
        need += 1
    return float(pos[need - 1])


def threshold_for_weighted_recall(scores, weights, n: int, target: float, confidence: float = 0.0) -> float:
    """:func:`threshold_for_recall` for weighted positives that stand for ``n`` independent ones (several
    positives drawn from one photo share its weight): the highest threshold t at which the positives' weighted
    share with ``score >= t`` reaches the smallest ``k / n`` whose recall lower bound reaches ``target``."""
    scores, weights = np.asarray(scores, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if len(scores) == 0 or n < 1 or weights.sum() <= 0:
        raise ValueError("no positive example on validation: cannot choose a threshold for a recall target")
    need = max(1, math.ceil(target * n - 1e-9))
    while need < n and recall_lower_bound(need, n, confidence) < target:
        need += 1
    order = np.argsort(-scores, kind="stable")
    share = np.cumsum(weights[order]) / weights.sum()
    return float(scores[order][min(int(np.searchsorted(share, need / n - 1e-12)), len(scores) - 1)])


UNCALIBRATED = "uncalibrated: no positive on validation (the check flags every photo)"


def gap_middle(scores, labels, threshold: float) -> float:
    """``threshold`` lowered into the gap under it: halfway, in logit space, between the highest validation negative
    under it and the lowest validation score above that negative (a positive: none of the scores between is a
    negative).

    For probabilities whose positives sit far above the negatives: every threshold in that gap flags the same
    validation negatives and catches every validation positive above it, and the lowest positive caught on ~25
    validation positives is a noisy estimate of the positives' lower tail; the middle keeps the widest margin to
    both sides (the prohibited heads on the shared neck missed 14 of 300 test positives at the lowest positive and 7
    at the middle, with the same clean photos flagged: benchmarks/results/prohibited_heads.json). The gap's top is
    the lowest positive above the negative, not ``threshold``: when the recall target lets the lowest positives go,
    those above the highest negative cost no validation false alarm, and a middle taken from ``threshold`` sat above
    them (the cash head on the shared neck at seed 8: one validation positive at logit 1.05, the threshold at 1.68, four test positives
    between -1.7 and 1.6 missed)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    below = scores[~labels & (scores < threshold)]
    if not len(below):
        return float(threshold)
    floor = float(below.max())
    top = float(min(threshold, scores[scores > floor].min()))
    logit = lambda p: math.log(min(max(p, 1e-7), 1 - 1e-7) / (1 - min(max(p, 1e-7), 1 - 1e-7)))
    return float(1 / (1 + math.exp(-(logit(top) + logit(floor)) / 2)))


def calibrate(scores, labels, target: float, confidence: float = 0.0,
              middle: bool = False) -> tuple[float | None, str]:
    """The threshold for ``target`` recall on validation and where it came from; ``middle``: placed by
    :func:`gap_middle` (probabilities only).

    With no positive on validation there is nothing to calibrate on: the threshold is None, which
    the decision reads as "flag every photo" (:func:`pipelines.serve.decision.flagged`), and the
    gate refuses it unless ``gate.allow_unmeasured``. Never a guessed number.
    """
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return None, UNCALIBRATED
    threshold = threshold_for_recall(scores, labels, target, confidence)
    if middle:
        return gap_middle(scores, labels, threshold), "validation, middle of the gap"
    return threshold, "validation"


def generated_photos(root: Path, params, name: str, n: int, rates: dict[str, float], salt: int,
                     prohibited: bool = False) -> pd.DataFrame:
    """``n`` generated photos with ``rates``, rendered once under the project's ``.reviewops/enriched`` as ``name``
    (seed ``seed * 1000 + salt``; ``prohibited``: drawing prohibited items as the versioned photos do); the tiny
    profile caps the count at its ``extra_photos``. Empty when ``n`` is 0."""
    cap = params.train.caps.extra_photos
    n = n if cap is None else min(n, cap)
    if not n:
        return pd.DataFrame()
    from pipelines.data.generate import enriched_photos

    return enriched_photos(root, params, name, n, rates, salt=salt, prohibited=prohibited)


def generated_positives(root: Path, params, check: str, rates: dict[str, float], salt: int,
                        prohibited: bool = False) -> pd.DataFrame:
    """``recall_targets.extra_positives[check]`` :func:`generated_photos` with ``rates`` (the check's defect drawn
    on every one) as ``<check>-calibration``. Empty when the check has none. The family keeps the rows its check
    applies to whose defect is labelled (visible by ``labels.visibility``)."""
    return generated_photos(root, params, f"{check}-calibration", params.recall_targets.extra_positives.get(check, 0),
                            rates, salt, prohibited)


def calibrate_with_extra(s_val, y_val, s_extra, target: float, confidence: float,
                         what: str = "positives") -> tuple[float | None, str, dict]:
    """:func:`calibrate` over validation's scores and ``s_extra``, generated positives' scores joining validation's
    positives (none: validation's alone); the threshold, its source and what it rests on (``val_positives``,
    ``extra_positives``, ``extra_recall``: the generated positives' share at or above it).

    A recall target's lower bound over about a hundred validation positives puts the threshold on their fifth to
    seventh lowest score, a quantile that moves tenfold between training runs; thousands of generated positives
    of the same kinds pin it down. They only set the threshold: no reported figure is measured on them."""
    s_val, y_val = np.asarray(s_val, dtype=np.float64), np.asarray(y_val, dtype=bool)
    s_extra = np.asarray(s_extra, dtype=np.float64)
    thr, source = calibrate(np.concatenate([s_val, s_extra]), np.concatenate([y_val, np.ones(len(s_extra), bool)]),
                            target, confidence)
    if len(s_extra):
        source = f"{source} and {len(s_extra)} generated {what}"
    info = {"val_positives": int(y_val.sum()), "extra_positives": int(len(s_extra)),
            "extra_recall": float((s_extra >= thr).mean()) if len(s_extra) and thr is not None else None}
    return thr, source, info


def metric(metrics: dict, path: str) -> float:
    """A metric by dotted path; null or an absent last key (metrics JSON writes NaN as null) is NaN."""
    *parents, leaf = path.split(".")
    d = metrics
    for key in parents:
        if not isinstance(d, dict) or key not in d:
            raise KeyError(f"{path} is not in the metrics: re-run `reviewops evaluate` (or dvc repro)")
        d = d[key]
    value = d.get(leaf) if isinstance(d, dict) else None
    return math.nan if value is None else float(value)


def binary_metrics(scores, labels, threshold: float | None) -> dict:
    """Recall, precision, false-positive rate, flagged share, AUC and AP of the check's flag at ``threshold``."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    flag = flagged(scores, threshold)
    tp, fp = int((flag & labels).sum()), int((flag & ~labels).sum())
    fn, tn = int((~flag & labels).sum()), int((~flag & ~labels).sum())
    both = 0 < labels.sum() < len(labels)
    return {
        "threshold": None if threshold is None else float(threshold),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "false_positive_rate": fp / (fp + tn) if fp + tn else float("nan"),
        "flagged_share": float(flag.mean()) if len(flag) else float("nan"),
        "auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "average_precision": float(average_precision_score(labels, scores)) if both else float("nan"),
        "positives": int(labels.sum()),
        "n": int(len(labels)),
    }


def pr_curve(scores, labels, points: int = 101) -> pd.DataFrame:
    """Precision and recall over ``points`` thresholds (score quantiles): a small CSV for ``dvc plots``."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    rows = []
    for t in np.unique(np.quantile(scores, np.linspace(0, 1, points))):
        flag = scores >= t
        tp = (flag & labels).sum()
        rows.append({"threshold": float(t), "recall": tp / max(1, labels.sum()),
                     "precision": tp / max(1, flag.sum())})
    return pd.DataFrame(rows)


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` atomically as JSON (NaN becomes null, so ``dvc metrics`` can read it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def write_metrics(family: str, metrics: dict, root: str | Path | None = None) -> Path:
    return write_json(metrics, metrics_path(family, root))


def write_plot(family: str, name: str, frame: pd.DataFrame, root: str | Path | None = None) -> Path:
    path = plots_dir(family, root) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def read_metrics(family: str, root: str | Path | None = None) -> dict:
    with open(metrics_path(family, root)) as fh:
        return json.load(fh)
