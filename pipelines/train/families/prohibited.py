"""Prohibited items: one independent binary classifier per category, merged for serving.

Each category's classifier is its own tail (the stages after ``train.prohibited.trunk_split`` and
the head conv of EfficientNet-Lite0, initialised from ImageNet) and logit, on the shared trunk (stem
and the stages before the split, ImageNet weights, frozen); at split 5 and 256 px, stages 5-6 are
trained per category (``benchmarks/prohibited_trunk.py`` chose them on validation). A category is trained on its own positives and the shared negatives (every other training
photo: clean ones and the other categories' positives), with its own seed derived from its name.
No trainable parameter is shared, and each category is stored in its own file
(``models/prohibited/<category>/model.pt``), so adding a category or retraining one leaves every
other category's weights, and therefore its outputs, bit-identical.

``CombinedProhibited`` runs the shared trunk once and every category's tail on it: one forward
gives every category's probability. Its cost grows linearly with the number of categories.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import (binary_metrics, model_dir, pr_curve, calibrate, write_json, write_metrics,
                          write_plot)
from pipelines.train import device as devices
from pipelines.train.harness import fit
from pipelines.params import Params
from pipelines.train.evaluate import metric
from pipelines.train.graphs import Bundle, Graph
from pipelines.serve.decision import flagged
from pipelines.train.trunk import Trunk
from pipelines.train.families import common
from pipelines.train.families.scalar import ScalarHead

FAMILY = "prohibited"


class CategoryClassifier(nn.Module):
    """One category: tail + logit on the shared trunk's output.

    ``tail_stages`` None: every remaining stage and the head conv (the tail costs as much as those stages, once per
    category); a number: :class:`pipelines.train.trunk.LightTail` (that many stages, a 1x1 conv, average and max
    pooling), whose cost at ``tail_stages: 0`` is a 1x1 conv on the trunk's last feature map.
    """

    def __init__(self, trunk: Trunk, tail_stages: int | None = None):
        super().__init__()
        self.tail = trunk.new_tail(tail_stages)
        self.head = ScalarHead(self.tail.num_features)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(f))


class CombinedProhibited(nn.Module):
    """Shared frozen trunk + one classifier per category: ``forward(x) -> [N, categories]`` probabilities."""

    def __init__(self, trunk: Trunk, classifiers: dict[str, CategoryClassifier]):
        super().__init__()
        self.trunk = trunk
        self.categories = list(classifiers)
        self.classifiers = nn.ModuleDict(classifiers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.trunk(x))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sigmoid(self.classifiers[c](f)) for c in self.categories], dim=1)


def category_seed(params: Params, category: str) -> int:
    """A seed from the category's name: independent of which other categories exist or their order."""
    return params.seed * 1000 + int(hashlib.sha256(category.encode()).hexdigest()[:6], 16) % 997


def _labels(df: pd.DataFrame, category: str) -> np.ndarray:
    return np.array([category in list(p) for p in df["prohibited"]], dtype=np.float32)


def _arch(params: Params) -> dict:
    return {"trunk_split": params.train.prohibited.trunk_split, "tail_stages": params.train.prohibited.tail_stages,
            "pretrained": params.train.pretrained, "image_size": params.train.input_size(FAMILY)}


def _check_category(params: Params, category: str) -> None:
    if category not in params.prohibited.categories:
        raise ValueError(f"unknown prohibited category {category!r}: params.yaml prohibited.categories is "
                         f"{list(params.prohibited.categories)}")


def train_category(root: Path, params: Params, category: str) -> dict:
    """Train one category's classifier and write ``models/prohibited/<category>/``."""
    _check_category(params, category)
    started = time.perf_counter()
    settings = params.train.family(FAMILY)
    device = common.device(params)
    df = common.load_frame(root)
    train_df, val_df = split_frame(df, "train"), split_frame(df, "val")
    arch = _arch(params)
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"])
    x_train = common.features(root, params, trunk, train_df, size=arch["image_size"])
    x_val = common.features(root, params, trunk, val_df, size=arch["image_size"])
    y_train, y_val = _labels(train_df, category), _labels(val_df, category)
    seed = category_seed(params, category)
    torch.manual_seed(seed)
    model = CategoryClassifier(trunk, arch["tail_stages"]).to(memory_format=torch.channels_last)
    positives, negatives = np.flatnonzero(y_train), np.flatnonzero(y_train == 0)

    def batches(epoch: int) -> list[list[int]]:
        """All positives ``positive_repeats`` times + a fresh draw of shared negatives, shuffled."""
        rng = np.random.default_rng([seed, epoch])
        neg = rng.choice(negatives, size=min(len(negatives), settings.negatives_per_epoch), replace=False)
        order = rng.permutation(np.concatenate([np.repeat(positives, settings.positive_repeats), neg]))
        return [order[i:i + settings.batch_size].tolist() for i in range(0, len(order), settings.batch_size)]

    def loss_fn(m, batch):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(m(x.contiguous(memory_format=torch.channels_last)), y)

    def score_fn(m, _loader):
        s = common.predict(m, x_val, device=device).numpy()
        return float(average_precision_score(y_val, s)) if 0 < y_val.sum() < len(y_val) else -float(np.mean(s))

    cfg = common.fit_config(settings, params, progress=True)
    # AP on validation is at most 1: once an epoch reaches it, later epochs cannot be kept (the best is). Keeping the
    # epoch of lowest validation log loss instead trained longer and measured worse on the whole reviewer, light
    # tails and full (benchmarks/results/prohibited_variants.json: *_ll rows)
    cfg = type(cfg)(**{**cfg.__dict__, "seed": seed, "best_possible": 1.0 if 0 < y_val.sum() < len(y_val) else None})
    run = common.run_dir(root, f"{FAMILY}-{category}", arch, cfg.__dict__, settings.model_dump(),
                         list(train_df["sha256"]), list(val_df["sha256"]))
    result = fit(model, common.Tensors(x_train, torch.as_tensor(y_train)), [], loss_fn, score_fn, cfg, run,
                 batch_sampler=batches, name=f"prohibited:{category}", device=device)
    out = model_dir(FAMILY, root) / category
    common.save(FAMILY, root, f"{category}/model", model, {**arch, "category": category, "seed": seed})
    common.finish_run(run)
    record = {"category": category, "seconds": round(time.perf_counter() - started, 1),
              "device": devices.describe(device), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "best_val_average_precision": result.best_score, "train_positives": int(len(positives)),
              "val_positives": int(y_val.sum()), "history": result.history}
    write_json(record, out / "train.json")
    return record


def train(root: Path, params: Params, categories: list[str] | None = None) -> dict:
    """Train every category (or the given ones); each is independent of the others."""
    records = {c: train_category(root, params, c) for c in (categories or params.prohibited.categories)}
    return {"family": FAMILY, "seconds": round(sum(r["seconds"] for r in records.values()), 1),
            "device": common.train_device(*records.values()), "categories": records}


def load_combined(root: Path, params: Params, categories: list[str] | None = None) -> CombinedProhibited:
    """The serving module from the per-category files, on the CPU; every file must have been cut from the same trunk."""
    categories = list(categories or params.prohibited.categories)
    arch = _arch(params)
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"])
    classifiers = {}
    for c in categories:
        blob = common.load(FAMILY, root, f"{c}/model")
        if {k: blob["arch"].get(k) for k in arch} != arch:          # a file from before tail_stages: None
            raise ValueError(f"prohibited:{c} was trained with {blob['arch']}, params.yaml now gives {arch}: "
                             f"retrain it (reviewops train prohibited --category {c})")
        clf = CategoryClassifier(trunk, arch["tail_stages"])
        clf.load_state_dict(blob["state_dict"])
        classifiers[c] = clf.eval()
    return CombinedProhibited(trunk, classifiers).eval()


def probabilities(root: Path, params: Params, df: pd.DataFrame, model: CombinedProhibited) -> np.ndarray:
    """[N, categories] probabilities via the cached trunk features (the same numbers as ``model(x)``), run on
    the training device (``model`` is moved there)."""
    device = common.device(params)
    model.to(device)
    x = common.features(root, params, model.trunk, df, size=params.train.input_size(FAMILY))
    return common.predict(model.from_features, x, device=device).numpy()


def evaluate(root: Path, params: Params) -> dict:
    df = common.load_frame(root)
    val, test = split_frame(df, "val"), split_frame(df, "test")
    model = load_combined(root, params)
    p_val, p_test = probabilities(root, params, val, model), probabilities(root, params, test, model)
    clean_test = np.array([len(p) == 0 for p in test["prohibited"]])
    per, thresholds, sources = {}, {}, {}
    for j, c in enumerate(model.categories):
        y_val, y_test = _labels(val, c).astype(bool), _labels(test, c).astype(bool)
        thr, sources[c] = calibrate(p_val[:, j], y_val, params.recall_targets.prohibited, params.recall_targets.confidence)
        thresholds[c] = thr
        m = binary_metrics(p_test[:, j], y_test, thr)
        m["false_positive_rate_clean"] = float(flagged(p_test[clean_test, j], thr).mean()) if clean_test.any() else float("nan")
        per[c] = m
        write_plot(FAMILY, f"pr_{c}", pr_curve(p_test[:, j], y_test), root)
    any_flag = np.stack([flagged(p_test[:, j], thresholds[c]) for j, c in enumerate(model.categories)], 1).any(1)
    any_label = ~clean_test
    records = {c: common.read_json(model_dir(FAMILY, root) / c / "train.json") for c in model.categories}
    metrics = {"test": {"categories": per, "any": binary_metrics(any_flag.astype(float), any_label, 0.5)},
               "thresholds": thresholds, "threshold_source": sources,
               "recall_target": params.recall_targets.prohibited,
               "train_seconds": round(sum(r["seconds"] for r in records.values()), 1),
               "train_device": common.train_device(*records.values()),
               "train_seconds_by_category": {c: r["seconds"] for c, r in records.items()}}
    write_metrics(FAMILY, metrics, root)
    return metrics


# --- what the rest asks of the family (pipelines.train.families.Family) ------------------------------

def bundle(root: Path, params: Params) -> Bundle:
    """Every category's classifier merged on the shared trunk: one graph, one probability per category."""
    model = load_combined(root, params)
    return Bundle([Graph(FAMILY, model, params.train.input_size(FAMILY), "scores", labels=list(model.categories))])


REVIEWER_DEFECTS = ("prohibited",)          # what the whole reviewer measures it on (pipelines/release/reviewer.py)


def gate_values(test: dict) -> tuple[dict[str, float], float]:
    return ({f"prohibited:{c}": metric(m, "recall") for c, m in test["categories"].items()},
            1.0 - metric(test, "any.flagged_share"))


def summary(t: dict) -> str:
    cats = t["categories"].values()
    low = {key: min((c[key] for c in cats if c[key] is not None), default=None) for key in ("recall", "precision")}
    return f"lowest recall {_f(low['recall'])}, lowest precision {_f(low['precision'])} over {len(cats)} categories"


def _f(value) -> str:
    return "n/a" if value is None else format(value, ".3f")
