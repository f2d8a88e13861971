"""One network shape for the score families (blur regressor, manipulation classifier, the
detector's sticker and dirt checks): frozen ImageNet trunk -> trainable tail -> one logit per
output. ``train_scalar`` fits it with the shared harness on cached trunk features; ``scores`` gives
the sigmoid of the logits for any rows. A target of NaN means "does not apply to this photo" (no
sticker check on a photo without stickers): it adds nothing to the loss."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipelines.data.dataset import split_frame
from pipelines.train import device as devices
from pipelines.train.harness import fit, seed_everything
from pipelines.params import Params
from pipelines.data.real_photos import Samples
from pipelines.train.trunk import Trunk, TrunkNet
from pipelines.train.families import common
from pipelines.train.features import array_features


class ScalarHead(nn.Module):
    """Logits [N] (one output) or [N, outputs]."""

    def __init__(self, in_features: int = 1280, dropout: float = 0.2, outputs: int = 1):
        super().__init__()
        self.drop, self.fc = nn.Dropout(dropout), nn.Linear(in_features, outputs)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.drop(f))
        return out.squeeze(1) if out.shape[1] == 1 else out


def build(arch: dict) -> TrunkNet:
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"], input_filter=arch.get("input_filter", "none"))
    tail = trunk.new_tail(arch.get("tail_stages"), arch.get("pooling", "mean_max"))
    head = ScalarHead(tail.num_features, dropout=0.0 if tail.num_features == 1 else 0.2,   # a local tail's one pooled
                      outputs=arch.get("outputs", 1))                                          # logit: no dropout on it
    return TrunkNet(trunk, tail, head).to(memory_format=torch.channels_last)


def random_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """One random window of ``fraction`` of the side for the whole batch (torch RNG: seeded, resumable)."""
    if fraction >= 1.0:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top = int(torch.randint(0, h - ch + 1, ()).item())
    left = int(torch.randint(0, w - cw + 1, ()).item())
    return x[..., top:top + ch, left:left + cw]


def train_scalar(family: str, root: Path, params: Params, rows: Callable[[pd.DataFrame], pd.DataFrame],
                 target: Callable[[pd.DataFrame], np.ndarray], loss: str,
                 val_score: Callable[[np.ndarray, np.ndarray], float], salt: int, *, name: str = "model",
                 settings_key: str | None = None, extra: Callable[[int, int, int], Samples] | None = None,
                 camera_resize: bool = True) -> dict:
    """Fit a score net on ``rows(train)`` against ``target``; early stopping on ``val_score``.

    ``loss``: ``mse`` (on the sigmoid, for scores in [0, 1]) or ``bce`` (binary labels, or scores in [0, 1] as
    soft targets). ``target`` gives [N] or [N, outputs]; NaN targets are left out of the loss. The net is saved as
    ``models/<family>/<name>.pt`` with the settings of ``train.<settings_key or family>``. The
    family's own net (``name == "model"``) also writes ``train.json``; other nets return their record
    for the family to write.

    ``extra(n, size, seed)``: ``n`` samples made in memory (real photographs, :mod:`pipelines.data.real_photos`)
    added to training (``train.<key>.real_samples`` of them) and to validation (a quarter as many, another seed).
    ``train.<key>.extra_photos`` (:class:`pipelines.params.ExtraPhotosFamily`): that many generated photos at its
    ``extra_rates``, rendered once (:func:`pipelines.data.generate.enriched_photos`, named after the net, seed salted
    by ``salt``), added to the training split only, so thresholds are still chosen on the versioned validation split.

    ``train.<key>.camera_views``: each training photo is also trained on as that many camera views
    (:mod:`pipelines.train.camera`) with its own target; ``camera_resize=False`` keeps their resolution (blur).
    Validation stays the photos as they are.
    """
    started = time.perf_counter()
    key = settings_key or family
    settings = params.train.family(key)
    device = common.device(params)
    df = common.load_frame(root)
    train_df, val_df = rows(split_frame(df, "train")), rows(split_frame(df, "val"))
    if train_df.empty or val_df.empty:
        raise common.NoData(f"{family}: no usable train or validation photos in the versioned data")
    versioned_train = len(train_df)
    if getattr(settings, "extra_photos", 0):
        from pipelines.data.generate import enriched_photos

        more_train = enriched_photos(root, params, family if name == "model" else name, settings.extra_photos,
                                     settings.extra_rates, salt=salt, progress=True)
        train_df = pd.concat([train_df, rows(more_train)], ignore_index=True)
    y_train_np = np.asarray(target(train_df), dtype=np.float32)
    arch = {"trunk_split": settings.trunk_split, "pretrained": params.train.pretrained,
            "image_size": params.train.input_size(key), "tail_stages": settings.tail_stages,
            "outputs": 1 if y_train_np.ndim == 1 else int(y_train_np.shape[1])}
    if getattr(settings, "input_filter", "none") != "none":       # a trunk of its own over the filtered photo
        arch["input_filter"] = settings.input_filter
    if getattr(settings, "pooling", "mean_max") != "mean_max":
        arch["pooling"] = settings.pooling
    cfg = common.fit_config(settings, params, salt=salt)
    seed_everything(cfg.seed)         # the fresh tail and head start from the seed's weights, not the process's draw
    net = build(arch)
    x_train = common.features(root, params, net.trunk, train_df, size=arch["image_size"])
    views = common.camera_views(params, settings, salt, camera_resize)
    if views:
        x_train = torch.cat([x_train, *(common.features(root, params, net.trunk, train_df, size=arch["image_size"],
                                                         view=v) for v in views)])
        y_train_np = np.concatenate([y_train_np] * (1 + len(views)))
    x_val = common.features(root, params, net.trunk, val_df, size=arch["image_size"])
    y_val = np.asarray(target(val_df), dtype=np.float32)
    added = {}
    if extra is not None and settings.real_samples:
        for split, n, seed in (("train", settings.real_samples, params.real_photos.seed * 1000 + salt),
                               ("val", max(1, settings.real_samples // 4), params.real_photos.seed * 1000 + salt + 1)):
            made = extra(n, arch["image_size"], seed)
            x = array_features(net.trunk, made.images, arch["image_size"], root, device)
            if split == "train":
                x_train, y_train_np = torch.cat([x_train, x]), np.concatenate([y_train_np, made.targets])
            else:
                x_val, y_val = torch.cat([x_val, x]), np.concatenate([y_val, made.targets])
            added[split] = pd.Series(made.kinds).str.split(":").str[0].value_counts().sort_index().to_dict()
    y_train = torch.as_tensor(y_train_np)

    def loss_fn(model, batch):
        x, y = batch
        logit = model.from_features(random_crop(x, settings.train_crop).contiguous(memory_format=torch.channels_last))
        known = ~torch.isnan(y)
        logit, y = logit[known], y[known]
        if loss == "mse":
            return nn.functional.mse_loss(torch.sigmoid(logit), y)
        return nn.functional.binary_cross_entropy_with_logits(logit, y)

    def score_fn(model, _loader):
        return val_score(torch.sigmoid(common.predict(model.from_features, x_val, device=device)).numpy(), y_val)

    run = common.run_dir(root, family if name == "model" else f"{family}-{name}", arch, cfg.__dict__,
                         settings.model_dump(), list(train_df["sha256"]), list(val_df["sha256"]),
                         params.real_photos.model_dump() if added else None,
                         [v.digest() for v in views] or None)
    sampler = None
    if settings.balanced:
        if loss != "bce" or y_train_np.ndim != 1:
            raise ValueError(f"train.{key}.balanced needs one binary target (bce); {family} {name} has {loss}")
        sampler = common.balanced_batches(y_train_np, settings.batch_size, cfg.seed)
    result = fit(net, common.Tensors(x_train, y_train), DataLoader([]), loss_fn, score_fn, cfg, run,
                 params=list(net.tail.parameters()) + list(net.head.parameters()), batch_sampler=sampler,
                 name=f"{family} {name}" if name != "model" else family, device=device)
    common.save(family, root, name, net, arch)
    common.finish_run(run)
    record = dict(epochs_run=result.epochs_run, best_epoch=result.best_epoch, best_val_score=result.best_score,
                  fit_seconds=round(result.seconds, 1), history=result.history, train_photos=versioned_train,
                  extra_train_photos=len(train_df) - versioned_train, camera_view_photos=len(views) * len(train_df),
                  val_photos=len(val_df), real_photo_samples=added or None)
    if name != "model":
        return {"seconds": round(time.perf_counter() - started, 1), "device": devices.describe(device), **record}
    return common.write_train_record(family, root, started, df, device, **record)


def load_net(family: str, root: Path, name: str = "model") -> tuple[TrunkNet, dict]:
    """The saved net, on the CPU (what export and serving take)."""
    blob = common.load(family, root, name)
    net = build(blob["arch"])
    net.load_state_dict(blob["state_dict"])
    return net.eval(), blob["arch"]


def scores(family: str, root: Path, params: Params, df: pd.DataFrame, name: str = "model") -> np.ndarray:
    """sigmoid(logits) of the trained net for the rows of ``df`` (via the trunk-feature cache), run on the
    training device."""
    device = common.device(params)
    net, arch = load_net(family, root, name)
    net.to(device)
    x = common.features(root, params, net.trunk, df, size=arch["image_size"])
    return torch.sigmoid(common.predict(net.from_features, x, device=device)).numpy()


def score_bundle(family: str, root: Path):
    """The bundle of a one-score family (blur, manipulation): sigmoid(net) as one ``score`` graph."""
    from pipelines.train.graphs import Bundle, Graph, Probability

    net, arch = load_net(family, root)
    return Bundle([Graph(family, Probability(net), arch["image_size"], "score")])
