"""One network shape for the score families (blur regressor, manipulation classifier, the
detector's sticker and dirt checks): frozen ImageNet trunk -> trainable tail -> one logit per
output. ``train_scalar`` fits it with the shared harness on cached trunk features; ``scores`` gives
the sigmoid of the logits for any rows. A target of NaN means "does not apply to this photo" (no
sticker check on a photo without stickers): it adds nothing to the loss."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipelines.data.dataset import split_frame
from pipelines.train import device as devices
from pipelines.train.harness import fit
from pipelines.params import Params
from pipelines.data.real_photos import Samples
from pipelines.train.trunk import CellTail, Trunk, TrunkNet, pool, to_input
from pipelines.train.families import common


class ScalarHead(nn.Module):
    """Logits [N] (one output) or [N, outputs]."""

    def __init__(self, in_features: int = 1280, dropout: float = 0.2, outputs: int = 1):
        super().__init__()
        self.drop, self.fc = nn.Dropout(dropout), nn.Linear(in_features, outputs)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.drop(f))
        return out.squeeze(1) if out.shape[1] == 1 else out


class CellMaxHead(nn.Module):
    """Logits [N, outputs] from a tail's unpooled map (:class:`pipelines.train.trunk.CellTail`).

    The outputs listed in ``cells`` are each the highest cell of its own logit map (a 1x1 conv over the map,
    :meth:`maps`): a local defect, a dirt spot, is scored where it is and one spot is enough, and the map can be
    trained on the defect's boxes. The others are ``ScalarHead``'s linear layer over the pooled map.
    """

    def __init__(self, channels: int, outputs: int, cells: list[int], dropout: float = 0.2):
        super().__init__()
        if not cells or not all(0 <= j < outputs for j in cells):
            raise ValueError(f"cell outputs {cells} must be among the {outputs} outputs")
        self.outputs, self.cells = outputs, list(cells)
        self.drop, self.fc = nn.Dropout(dropout), nn.Linear(2 * channels, outputs)
        self.cell = nn.Conv2d(channels, len(cells), 1)

    def maps(self, z: torch.Tensor) -> torch.Tensor:
        """[N, len(cells), H, W]: every cell's logit of each cell output."""
        return self.cell(z)

    def scores(self, z: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        pooled = self.fc(self.drop(pool(z)))
        top = maps.amax((2, 3))
        out = torch.stack([top[:, self.cells.index(j)] if j in self.cells else pooled[:, j]
                           for j in range(self.outputs)], dim=1)
        return out.squeeze(1) if self.outputs == 1 else out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scores(z, self.maps(z))


def build(arch: dict) -> TrunkNet:
    trunk = Trunk(arch["trunk_split"], pretrained=arch["pretrained"])
    if arch.get("cell_outputs"):
        if arch.get("tail_stages") is None:
            raise ValueError("cell outputs need a light tail (tail_stages)")
        tail = CellTail(trunk._rest, trunk.split, arch["tail_stages"])
        head = CellMaxHead(256, arch.get("outputs", 1), arch["cell_outputs"])
    else:
        tail = trunk.new_tail(arch.get("tail_stages"))
        head = ScalarHead(tail.num_features, outputs=arch.get("outputs", 1))
    return TrunkNet(trunk, tail, head).to(memory_format=torch.channels_last)


def box_masks(boxes: pd.Series, labels: list[str], grid: int = 64) -> torch.Tensor:
    """[N, len(labels), grid, grid] uint8: 1 where a labelled box of that label covers the cell (boxes in
    normalised [0, 1] coordinates, as the manifest holds them); what a cell output's map is trained on."""
    out = np.zeros((len(boxes), len(labels), grid, grid), dtype=np.uint8)
    for i, photo in enumerate(boxes):
        for box in photo if photo is not None else ():
            if box["label"] in labels:
                x0, y0 = (int(np.floor(np.clip(box[k], 0, 1) * grid)) for k in ("x0", "y0"))
                x1, y1 = (int(np.ceil(np.clip(box[k], 0, 1) * grid)) for k in ("x1", "y1"))
                out[i, labels.index(box["label"]), y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1
    return torch.from_numpy(out)


def random_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """One random window of ``fraction`` of the side for the whole batch (torch RNG: seeded, resumable)."""
    if fraction >= 1.0:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top = int(torch.randint(0, h - ch + 1, ()).item())
    left = int(torch.randint(0, w - cw + 1, ()).item())
    return x[..., top:top + ch, left:left + cw]


@dataclass(frozen=True)
class CellTargets:
    """Outputs of a net scored by a cell map, what each map is trained on, and the weight of that loss."""
    outputs: tuple[int, ...]                            # indices among the net's outputs
    masks: Callable[[pd.DataFrame], torch.Tensor]       # rows -> [N, len(outputs), G, G] uint8 (``box_masks``)
    weight: float


def cell_loss(maps: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every cell of ``maps`` [N, K, H, W] against ``masks`` [N, K, G, G] (a cell is positive
    where a box covers any of it), over the photos whose target of that output is known (not NaN)."""
    target = nn.functional.adaptive_max_pool2d(masks.float(), maps.shape[-2:])
    use = ~torch.isnan(known)
    if not use.any():
        return maps.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(maps[use], target[use])


def train_scalar(family: str, root: Path, params: Params, rows: Callable[[pd.DataFrame], pd.DataFrame],
                 target: Callable[[pd.DataFrame], np.ndarray], loss: str,
                 val_score: Callable[[np.ndarray, np.ndarray], float], salt: int, *, name: str = "model",
                 settings_key: str | None = None, extra: Callable[[int, int, int], Samples] | None = None,
                 cells: CellTargets | None = None) -> dict:
    """Fit a score net on ``rows(train)`` against ``target``; early stopping on ``val_score``.

    ``loss``: ``mse`` (on the sigmoid, for scores in [0, 1]) or ``bce`` (binary labels, or scores in [0, 1] as
    soft targets). ``target`` gives [N] or [N, outputs]; NaN targets are left out of the loss. The net is saved as
    ``models/<family>/<name>.pt`` with the settings of ``train.<settings_key or family>``. The
    family's own net (``name == "model"``) also writes ``train.json``; other nets return their record
    for the family to write.

    ``extra(n, size, seed)``: ``n`` samples made in memory (real photographs, :mod:`pipelines.data.real_photos`)
    added to training (``train.<key>.real_samples`` of them) and to validation (a quarter as many, another seed).

    ``cells``: the outputs scored as the highest cell of a map (:class:`CellMaxHead`), each map also trained
    cell by cell on its boxes (binary cross-entropy, weighted by ``cells.weight``) on the photos where the
    output's target is known.
    """
    started = time.perf_counter()
    key = settings_key or family
    settings = params.train.family(key)
    device = common.device(params)
    df = common.load_frame(root)
    train_df, val_df = rows(split_frame(df, "train")), rows(split_frame(df, "val"))
    if train_df.empty or val_df.empty:
        raise common.NoData(f"{family}: no usable train or validation photos in the versioned data")
    y_train_np = np.asarray(target(train_df), dtype=np.float32)
    arch = {"trunk_split": settings.trunk_split, "pretrained": params.train.pretrained,
            "image_size": params.train.input_size(key), "tail_stages": settings.tail_stages,
            "outputs": 1 if y_train_np.ndim == 1 else int(y_train_np.shape[1])}
    if cells is not None:
        if settings.train_crop < 1.0 or (extra is not None and settings.real_samples):
            raise ValueError(f"train.{key}: a cell map's boxes need whole photos (train_crop 1.0, no real samples)")
        arch["cell_outputs"] = list(cells.outputs)
    net = build(arch)
    x_train = common.features(root, params, net.trunk, train_df, size=arch["image_size"])
    x_val = common.features(root, params, net.trunk, val_df, size=arch["image_size"])
    y_val = np.asarray(target(val_df), dtype=np.float32)
    added = {}
    if extra is not None and settings.real_samples:
        for split, n, seed in (("train", settings.real_samples, params.real_photos.seed * 1000 + salt),
                               ("val", max(1, settings.real_samples // 4), params.real_photos.seed * 1000 + salt + 1)):
            made = extra(n, arch["image_size"], seed)
            x = image_features(net.trunk, made.images, arch["image_size"], device)
            if split == "train":
                x_train, y_train_np = torch.cat([x_train, x]), np.concatenate([y_train_np, made.targets])
            else:
                x_val, y_val = torch.cat([x_val, x]), np.concatenate([y_val, made.targets])
            added[split] = pd.Series(made.kinds).str.split(":").str[0].value_counts().sort_index().to_dict()
    y_train = torch.as_tensor(y_train_np)
    targets = (y_train,) if cells is None else (y_train, cells.masks(train_df))

    def loss_fn(model, batch):
        x, y = batch[0], batch[1]
        x = random_crop(x, settings.train_crop).contiguous(memory_format=torch.channels_last)
        if cells is None:
            logit = model.from_features(x)
            extra_loss = 0.0
        else:
            z = model.tail(x)
            maps = model.head.maps(z)
            logit = model.head.scores(z, maps)
            extra_loss = cells.weight * cell_loss(maps, batch[2], y.reshape(len(y), -1)[:, list(cells.outputs)])
        known = ~torch.isnan(y)
        logit, y = logit[known], y[known]
        if loss == "mse":
            return nn.functional.mse_loss(torch.sigmoid(logit), y) + extra_loss
        return nn.functional.binary_cross_entropy_with_logits(logit, y) + extra_loss

    def score_fn(model, _loader):
        return val_score(torch.sigmoid(common.predict(model.from_features, x_val, device=device)).numpy(), y_val)

    cfg = common.fit_config(settings, params, salt=salt)
    run = common.run_dir(root, family if name == "model" else f"{family}-{name}", arch, cfg.__dict__,
                         settings.model_dump(), list(train_df["sha256"]), list(val_df["sha256"]),
                         params.real_photos.model_dump() if added else None)
    sampler = None
    if settings.balanced:
        if loss != "bce" or y_train_np.ndim != 1:
            raise ValueError(f"train.{key}.balanced needs one binary target (bce); {family} {name} has {loss}")
        sampler = common.balanced_batches(y_train_np, settings.batch_size, cfg.seed)
    result = fit(net, common.Tensors(x_train, *targets), DataLoader([]), loss_fn, score_fn, cfg, run,
                 params=list(net.tail.parameters()) + list(net.head.parameters()), batch_sampler=sampler,
                 name=f"{family} {name}" if name != "model" else family, device=device)
    common.save(family, root, name, net, arch)
    common.finish_run(run)
    record = dict(epochs_run=result.epochs_run, best_epoch=result.best_epoch, best_val_score=result.best_score,
                  fit_seconds=round(result.seconds, 1), history=result.history, train_photos=len(train_df),
                  val_photos=len(val_df), real_photo_samples=added or None)
    if name != "model":
        return {"seconds": round(time.perf_counter() - started, 1), "device": devices.describe(device), **record}
    return common.write_train_record(family, root, started, df, device, **record)


@torch.no_grad()
def image_features(trunk: Trunk, images: list[np.ndarray], size: int, device: torch.device,
                   batch_size: int = 32) -> torch.Tensor:
    """Trunk outputs (float16, on the CPU, as the feature cache holds them) of in-memory uint8 RGB images."""
    trunk.eval().to(device)
    outs = [trunk(to_input(images[i:i + batch_size], size).to(device).contiguous(memory_format=torch.channels_last))
            .to(torch.float16).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.float16)


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
