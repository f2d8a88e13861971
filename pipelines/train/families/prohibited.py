"""Prohibited items: one independent binary classifier per category, merged for serving.

Every category reads the shared frozen trunk (stem and the stages before ``train.prohibited.trunk_split``, ImageNet
weights). With ``train.prohibited.neck`` (the default) the stages after the split are one shared **neck**: they
are fine-tuned once, on every category at once (multi-label), then frozen; each category is then only a light head
on the neck's output (a 1x1 conv, average and max pooling, one logit), so that one more category costs almost
nothing at serving time (benchmarks/results/prohibited_heads.json, prohibited_tail_latency.json). Without the
neck each category owns a whole tail (those stages and the head conv, or ``tail_stages`` of them), whose cost grows
linearly with the number of categories.

A category is trained on its own positives and the shared negatives (every other training photo: clean ones and
the other categories' positives), with its own seed derived from its name, and stored in its own file
(``models/prohibited/<category>/model.pt``, which records the digest of the neck it was trained on). No trainable
parameter of a category is shared: retraining one category (``reviewops train prohibited --category C``) or adding
one keeps the neck, so every other category's weights, and therefore its outputs, stay bit-identical. Training the
neck again (``reviewops train prohibited --neck``, which a new batch of data does through ``dvc repro``) is a change
of shared features, like a change of trunk: every category is retrained on it.

``CombinedProhibited`` runs the trunk and the neck once and every category's head on them: one forward gives every
category's probability.
"""

from __future__ import annotations

import copy
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
from pipelines.train.trunk import NUM_STAGES, LightTail, Trunk
from pipelines.train.families import common
from pipelines.train.families.scalar import ScalarHead

FAMILY = "prohibited"


class Neck(nn.Module):
    """The stages after the trunk's split (ImageNet weights), fine-tuned once on every category at once, then
    frozen and shared by every category's head. ``forward`` gives its feature map; ``logits`` (average and max
    pooling, one logit per category) is what it is trained with."""

    def __init__(self, trunk: Trunk, categories: int):
        super().__init__()
        self.blocks = copy.deepcopy(trunk._rest.blocks[trunk.split:]).requires_grad_(True)
        last = self.blocks[-1][-1]
        self.channels = last.conv_pwl.out_channels if hasattr(last, "conv_pwl") else last.conv_pw.out_channels
        self.fc = ScalarHead(2 * self.channels, outputs=categories)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.blocks(f)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        z = self.blocks(f)
        return self.fc(torch.cat([z.mean((2, 3)), z.amax((2, 3))], dim=1))

    def digest(self) -> str:
        """Of the feature weights (not the training-only ``fc``): what a category's head records it was trained on."""
        h = hashlib.sha256()
        for k, v in sorted(self.blocks.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]


class CategoryClassifier(nn.Module):
    """One category: tail + logit on the shared features.

    On a neck: a 1x1 conv, average and max pooling (:class:`pipelines.train.trunk.LightTail` with no stage of its own)
    and one logit. Without one, on the trunk's output: ``tail_stages`` None, every remaining stage and the head conv
    (the tail costs as much as those stages, once per category); a number, that many stages and the 1x1 conv.
    """

    def __init__(self, trunk: Trunk, tail_stages: int | None = None, neck: bool = False):
        super().__init__()
        self.tail = LightTail(trunk._rest, NUM_STAGES, 0) if neck else trunk.new_tail(tail_stages)
        self.head = ScalarHead(self.tail.num_features)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(f))


class CombinedProhibited(nn.Module):
    """Shared frozen trunk (and neck) + one classifier per category: ``forward(x) -> [N, categories]``
    probabilities."""

    def __init__(self, trunk: Trunk, classifiers: dict[str, CategoryClassifier], neck: Neck | None = None):
        super().__init__()
        self.trunk, self.neck = trunk, neck
        self.categories = list(classifiers)
        self.classifiers = nn.ModuleDict(classifiers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.trunk(x))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        if self.neck is not None:
            f = self.neck(f)
        return torch.stack([torch.sigmoid(self.classifiers[c](f)) for c in self.categories], dim=1)


def category_seed(params: Params, category: str) -> int:
    """A seed from the category's name: independent of which other categories exist or their order."""
    return params.seed * 1000 + int(hashlib.sha256(category.encode()).hexdigest()[:6], 16) % 997


def _labels(df: pd.DataFrame, category: str) -> np.ndarray:
    return np.array([category in list(p) for p in df["prohibited"]], dtype=np.float32)


def _arch(params: Params) -> dict:
    settings = params.train.prohibited
    return {"trunk_split": settings.trunk_split, "tail_stages": None if settings.neck else settings.tail_stages,
            "neck": settings.neck, "pretrained": params.train.pretrained, "image_size": params.train.input_size(FAMILY)}


def _trunk_outputs(root: Path, params: Params):
    """``arch``, the frozen trunk, and the training and validation frames with their cached trunk outputs. With
    ``train.prohibited.camera_views`` the training frame holds each photo once more per camera view (the same for
    every category and the neck), its outputs those of the view."""
    df = common.load_frame(root)
    arch = _arch(params)
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"])
    train_df, val_df = (split_frame(df, split) for split in ("train", "val"))
    views = _views(params)
    x_train = torch.cat([common.features(root, params, trunk, train_df, size=arch["image_size"], view=v)
                         for v in (None, *views)])
    train_df = pd.concat([train_df] * (1 + len(views)), ignore_index=True)
    return arch, trunk, (train_df, x_train), (val_df, common.features(root, params, trunk, val_df,
                                                                      size=arch["image_size"]))


def _views(params: Params) -> list:
    """The camera views every category and the neck train on (one salt: the same views for all)."""
    return common.camera_views(params, params.train.prohibited, salt=3)


def _views_key(params: Params) -> list[str] | None:
    """What the training frame's camera views depend on, for the harness's resume directory (as the other
    families key theirs)."""
    return [v.digest() for v in _views(params)] or None


NECK = "_neck"          # models/prohibited/_neck/model.pt: not a category (categories are checked against params)


def train_neck(root: Path, params: Params) -> dict:
    """Fine-tune the stages after the split once on every category of params.yaml at once and write
    ``models/prohibited/_neck/``: multi-label logistic loss, each epoch every training photo with any prohibited item
    plus as many fresh negatives as ``negatives_per_epoch``, the epoch of the best mean validation average precision
    kept. Every category's head must be trained on it afterwards. Without a neck in params.yaml, the directory
    holds only a train.json that says so (the DVC stage's output)."""
    started = time.perf_counter()
    settings = params.train.family(FAMILY)
    out = model_dir(FAMILY, root) / NECK
    if not settings.neck:
        (out / "model.pt").unlink(missing_ok=True)
        record = {"neck": None, "why": "train.prohibited.neck is false: every category owns its whole tail",
                  "seconds": 0.0}
        write_json(record, out / "train.json")
        return record
    device = common.device(params)
    categories = list(params.prohibited.categories)
    arch, trunk, (train_df, x_train), (val_df, x_val) = _trunk_outputs(root, params)
    y_train = np.stack([_labels(train_df, c) for c in categories], 1)
    y_val = np.stack([_labels(val_df, c) for c in categories], 1)
    seed = params.seed * 1000 + 997
    torch.manual_seed(seed)
    neck = Neck(trunk, len(categories)).to(memory_format=torch.channels_last)
    positives, negatives = np.flatnonzero(y_train.any(1)), np.flatnonzero(~y_train.any(1))

    def batches(epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        neg = rng.choice(negatives, size=min(len(negatives), settings.negatives_per_epoch), replace=False)
        order = rng.permutation(np.concatenate([positives, neg]))
        return [order[i:i + settings.batch_size].tolist() for i in range(0, len(order), settings.batch_size)]

    def loss_fn(m, batch):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(m.logits(x.contiguous(memory_format=torch.channels_last)), y)

    measured = [j for j in range(len(categories)) if 0 < y_val[:, j].sum() < len(y_val)]

    def score_fn(m, _loader):
        s = common.predict(m.logits, x_val, device=device).reshape(len(x_val), -1).numpy()
        return float(np.mean([average_precision_score(y_val[:, j], s[:, j]) for j in measured])) if measured \
            else -float(np.mean(s))

    cfg = common.fit_config(settings, params, progress=True)
    cfg = type(cfg)(**{**cfg.__dict__, "seed": seed, "max_epochs": settings.neck_epochs})
    run = common.run_dir(root, f"{FAMILY}-neck", arch, categories, cfg.__dict__, settings.model_dump(),
                         list(train_df["sha256"]), list(val_df["sha256"]), _views_key(params))
    result = fit(neck, common.Tensors(x_train, torch.as_tensor(y_train)), [], loss_fn, score_fn, cfg, run,
                 batch_sampler=batches, name="prohibited:neck", device=device)
    neck.eval()
    common.save(FAMILY, root, f"{NECK}/model", neck, {**arch, "categories": categories, "seed": seed})
    common.finish_run(run)
    record = {"neck": neck.digest(), "categories": categories, "seconds": round(time.perf_counter() - started, 1),
              "device": devices.describe(device), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "best_val_mean_average_precision": result.best_score, "train_positives": int(len(positives)),
              "history": result.history}
    write_json(record, out / "train.json")
    return record


def load_neck(root: Path, params: Params, trunk: Trunk) -> Neck:
    """The trained neck, frozen, on the CPU; a missing one or one cut from another trunk is a clear error."""
    path = model_dir(FAMILY, root) / NECK / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train the shared neck first (reviewops train prohibited "
                                f"--neck, or dvc repro)")
    blob = common.load(FAMILY, root, f"{NECK}/model")
    arch = _arch(params)
    if {k: blob["arch"].get(k) for k in arch} != arch:
        raise ValueError(f"the prohibited neck was trained with {blob['arch']}, params.yaml now gives {arch}: "
                         f"retrain it (reviewops train prohibited --neck) and every category")
    neck = Neck(trunk, len(blob["arch"]["categories"]))
    neck.load_state_dict(blob["state_dict"])
    return neck.eval().requires_grad_(False)


@torch.no_grad()
def neck_features(neck: Neck, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The neck's output over cached trunk features, float16 on the CPU (what a category's head trains on)."""
    neck.to(device)
    out = [neck(x[i:i + 64].to(device).float().contiguous(memory_format=torch.channels_last)).half().cpu()
           for i in range(0, len(x), 64)]
    neck.cpu()
    return torch.cat(out) if out else torch.zeros(0)


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
    arch, trunk, (train_df, x_train), (val_df, x_val) = _trunk_outputs(root, params)
    neck_digest = None
    if arch["neck"]:
        neck = load_neck(root, params, trunk)
        neck_digest = neck.digest()
        x_train, x_val = neck_features(neck, x_train, device), neck_features(neck, x_val, device)
    y_train, y_val = _labels(train_df, category), _labels(val_df, category)
    seed = category_seed(params, category)
    torch.manual_seed(seed)
    model = CategoryClassifier(trunk, arch["tail_stages"], arch["neck"]).to(memory_format=torch.channels_last)
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

    measured = 0 < y_val.sum() < len(y_val)

    def score_fn(m, _loader):
        s = common.predict(m, x_val, device=device).numpy()
        if not measured:
            return -float(np.mean(s))
        ap = float(average_precision_score(y_val, s))
        if not arch["neck"]:
            return ap
        # on the neck validation AP reaches 1 within an epoch or two, with thin margins: equal APs (to 4 places)
        # are told apart by the validation log loss, over every epoch (benchmarks/results/prohibited_heads.json)
        p = np.clip(1 / (1 + np.exp(-s.astype(np.float64))), 1e-7, 1 - 1e-7)
        loss = -float(np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))
        return round(ap, 4) - 1e-5 * min(loss, 9.9)

    cfg = common.fit_config(settings, params, progress=True)
    # Without a neck: AP on validation is at most 1, and once an epoch reaches it, later epochs cannot be kept (the
    # best is). Keeping the epoch of lowest validation log loss instead trained longer and measured worse on the
    # whole reviewer, light tails and full (benchmarks/results/prohibited_variants.json: *_ll rows)
    ceiling = 1.0 if measured and not arch["neck"] else None
    cfg = type(cfg)(**{**cfg.__dict__, "seed": seed, "best_possible": ceiling})
    run = common.run_dir(root, f"{FAMILY}-{category}", arch, neck_digest, cfg.__dict__, settings.model_dump(),
                         list(train_df["sha256"]), list(val_df["sha256"]), _views_key(params))
    result = fit(model, common.Tensors(x_train, torch.as_tensor(y_train)), [], loss_fn, score_fn, cfg, run,
                 batch_sampler=batches, name=f"prohibited:{category}", device=device)
    out = model_dir(FAMILY, root) / category
    common.save(FAMILY, root, f"{category}/model", model,
                {**arch, "category": category, "seed": seed, "neck_digest": neck_digest})
    common.finish_run(run)
    record = {"category": category, "neck": neck_digest, "seconds": round(time.perf_counter() - started, 1),
              "device": devices.describe(device), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "best_val_average_precision": result.best_score, "train_positives": int(len(positives)),
              "val_positives": int(y_val.sum()), "history": result.history}
    write_json(record, out / "train.json")
    return record


def train(root: Path, params: Params, categories: list[str] | None = None) -> dict:
    """Train every category (or the given ones); each is independent of the others. Without ``categories``, the
    neck (when params.yaml has one) is trained first: the whole family from the data."""
    neck = None if categories else train_neck(root, params)
    records = {c: train_category(root, params, c) for c in (categories or params.prohibited.categories)}
    seconds = sum(r["seconds"] for r in records.values()) + (neck["seconds"] if neck else 0.0)
    return {"family": FAMILY, "seconds": round(seconds, 1), "device": common.train_device(*records.values()),
            "neck": neck, "categories": records}


def load_combined(root: Path, params: Params, categories: list[str] | None = None) -> CombinedProhibited:
    """The serving module from the per-category files, on the CPU; every file must have been cut from the same trunk."""
    categories = list(categories or params.prohibited.categories)
    arch = _arch(params)
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"])
    neck = load_neck(root, params, trunk) if arch["neck"] else None
    classifiers = {}
    for c in categories:
        blob = common.load(FAMILY, root, f"{c}/model")
        if {k: blob["arch"].get(k, False if k == "neck" else None) for k in arch} != arch:
            raise ValueError(f"prohibited:{c} was trained with {blob['arch']}, params.yaml now gives {arch}: "
                             f"retrain it (reviewops train prohibited --category {c})")
        if neck is not None and blob["arch"].get("neck_digest") != neck.digest():
            raise ValueError(f"prohibited:{c} was trained on another neck ({blob['arch'].get('neck_digest')}, the "
                             f"neck is {neck.digest()}): retrain it (reviewops train prohibited --category {c})")
        clf = CategoryClassifier(trunk, arch["tail_stages"], arch["neck"])
        clf.load_state_dict(blob["state_dict"])
        classifiers[c] = clf.eval()
    return CombinedProhibited(trunk, classifiers, neck).eval()


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
        # saturated probabilities: the threshold in the middle of the gap under the lowest positive it must catch
        # (at the positive itself one step of the target put gun's test recall at 0.783: prohibited_target.json)
        thr, sources[c] = calibrate(p_val[:, j], y_val, params.recall_targets.prohibited, params.recall_targets.confidence,
                                    middle=True)
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
