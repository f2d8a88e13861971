"""What the timm families share: the versioned data, cached trunk features, tensors for the
harness, batched prediction, and saving and loading a model with the description that rebuilds it.

The training device is ``device(params)`` (``train.device``, :mod:`pipelines.train.device`): the
feature passes, the harness and ``predict`` run there; what is saved under ``models/`` is saved from
the CPU and loaded onto it, as export and serving need."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipelines.data.dataset import versioned_manifest
from pipelines.train import camera
from pipelines.train import device as devices
from pipelines.train.camera import CameraView
from pipelines.train.evaluate import model_dir, write_json
from pipelines.train.features import trunk_features
from pipelines.train.harness import FitConfig
from pipelines.params import Params, TimmFamily
from pipelines.train.trunk import Trunk


class NoData(RuntimeError):
    pass


def load_frame(root: Path) -> pd.DataFrame:
    """Every versioned photo with its split; no versioned data is an error that says what to run."""
    df = versioned_manifest(root)
    if df.empty:
        raise NoData(f"no versioned data in {root}: version a batch first (reviewops version data/incoming/<batch>)")
    return df


def device(params: Params) -> torch.device:
    """Where this family trains and scores (``train.device``); a clear error for cuda without a GPU."""
    return devices.of(params)


def make_trunk(params: Params, split: int) -> Trunk:
    return Trunk(split, pretrained=params.train.pretrained)


def features(root: Path, params: Params, trunk: Trunk, df: pd.DataFrame, size: int | None = None,
             boxes: list | None = None, pad: float = 1.0, view: CameraView | None = None) -> torch.Tensor:
    """Trunk outputs (float16, on the CPU) of the rows of ``df`` at ``size`` px (default: params), from the
    cache; the photos it lacks are computed on the training device (``train.device``, resolved only then).
    ``boxes``: each row's product crop instead; ``view``: each photo as that camera view makes it
    (:func:`pipelines.train.features.trunk_features`)."""
    torch.set_num_threads(params.train.threads)
    return trunk_features(trunk, list(df["path"]), list(df["sha256"]), size or params.train.input_size(), root=root,
                          device=params.train.device, boxes=boxes, pad=pad, view=view)


def camera_views(params: Params, settings: TimmFamily, salt: int, resize: bool = True) -> list[CameraView]:
    """The camera views (``train.camera``) a family trains on besides its photos: ``settings.camera_views`` of
    them, drawn for this seed and family (``salt``); ``resize=False`` keeps each photo's resolution."""
    return camera.views(params.train.camera, settings.camera_views, params.seed * 1000 + salt, resize)


class Tensors(Dataset):
    """Cached features and targets as a dataset for the harness (features are widened to float32)."""

    def __init__(self, x: torch.Tensor, *targets: torch.Tensor):
        if any(len(t) != len(x) for t in targets):
            raise ValueError("features and targets differ in length")
        self.x, self.targets = x, targets

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i].float(), *(t[i] for t in self.targets))


def balanced_batches(labels, batch_size: int, seed: int):
    """``batch_sampler(epoch)`` for the harness: epochs of about ``len(labels)`` rows, each batch half positives
    (drawn with replacement) and half negatives (a fresh share of them each epoch, without replacement), shuffled.

    With a few percent positives, plain shuffling shows the loss mostly negatives and a recall target then sets
    the threshold among the clean photos' scores; the prior it shifts is irrelevant, since thresholds are chosen
    on validation for a recall target."""
    labels = np.asarray(labels)
    positives, negatives = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
    if len(positives) == 0 or len(negatives) == 0:
        raise NoData("balanced batches need positive and negative training photos")
    half = max(1, batch_size // 2)
    n_batches = max(1, len(labels) // batch_size)

    def sampler(epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        pos = rng.choice(positives, size=n_batches * half, replace=True)
        neg = rng.choice(negatives, size=n_batches * half, replace=len(negatives) < n_batches * half)
        return [rng.permutation(np.concatenate([pos[i * half:(i + 1) * half], neg[i * half:(i + 1) * half]])).tolist()
                for i in range(n_batches)]

    return sampler


def fit_config(settings: TimmFamily, params: Params, salt: int = 0, progress: bool = True) -> FitConfig:
    return FitConfig(max_epochs=settings.max_epochs, patience=settings.patience, lr=settings.lr,
                     weight_decay=settings.weight_decay, batch_size=settings.batch_size,
                     seed=params.seed * 1000 + salt, threads=params.train.threads, progress=progress,
                     ema_decay=settings.ema_decay)


@torch.no_grad()
def predict(fn, x: torch.Tensor, batch_size: int = 32, device: torch.device | None = None) -> torch.Tensor:
    """``fn`` over ``x`` in batches, in inference mode; float32 output concatenated, on the CPU.

    ``device``: where each batch is sent (the module behind ``fn`` must be there); None leaves it where
    ``x`` is."""
    def run(chunk: torch.Tensor) -> torch.Tensor:
        chunk = (chunk if device is None else chunk.to(device)).float()
        return fn(chunk.contiguous(memory_format=torch.channels_last) if chunk.dim() == 4 else chunk).float().cpu()

    outs = [run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).float() if outs else torch.zeros(0)


def run_dir(root: Path, name: str, *inputs) -> Path:
    """The harness's working directory for one training run, keyed by everything it depends on.

    An interrupted run that is started again with the same data and settings resumes from its
    ``last.pt``; different data or settings get a fresh directory, never a stale resume.
    """
    h = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return root / ".cache" / "runs" / f"{name.replace(':', '-')}-{h}"


def finish_run(path: Path) -> None:
    """Remove a finished run's checkpoints (the model is saved under models/)."""
    shutil.rmtree(path, ignore_errors=True)


def data_fingerprint(df: pd.DataFrame) -> dict:
    return {"batches": sorted(df["batch"].unique().tolist()), "photos": int(len(df)),
            "splits": {k: int(v) for k, v in df["split"].value_counts().items()}}


def save(family: str, root: Path, name: str, net: torch.nn.Module, arch: dict) -> Path:
    """``models/<family>/<name>.pt``: the weights and ``arch``, all a builder needs to rebuild the net."""
    path = model_dir(family, root) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"arch": arch, "state_dict": net.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load(family: str, root: Path, name: str) -> dict:
    path = model_dir(family, root) / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `reviewops train {family}` (or `dvc repro`) first")
    return torch.load(path, map_location="cpu", weights_only=False)


def write_train_record(family: str, root: Path, started: float, df: pd.DataFrame, device: torch.device,
                       **extra) -> dict:
    """``models/<family>/train.json``: the training time and the device it was measured on, data, ``extra``."""
    record = {"family": family, "seconds": round(time.perf_counter() - started, 1),
              "device": devices.describe(device), "data": data_fingerprint(df), **extra}
    write_json(record, model_dir(family, root) / "train.json")
    return record


def read_json(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def read_train_record(family: str, root: Path) -> dict:
    return read_json(model_dir(family, root) / "train.json")


def train_device(*records: dict) -> str | None:
    """The device the training times of ``records`` were measured on, for metrics beside ``train_seconds``:
    one name, or the names joined when they differ; None for records written before it was recorded."""
    names = sorted({r["device"] for r in records if r.get("device")})
    return ", ".join(names) if names else None


def as_bool_tensor(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))
