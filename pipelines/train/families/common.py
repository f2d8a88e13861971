"""What the timm families share: the versioned data, cached trunk features, tensors for the
harness, batched prediction, and saving and loading a model with the description that rebuilds it."""

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


def make_trunk(params: Params, split: int) -> Trunk:
    return Trunk(split, pretrained=params.train.pretrained)


def features(root: Path, params: Params, trunk: Trunk, df: pd.DataFrame, size: int | None = None) -> torch.Tensor:
    """Trunk outputs (float16) of the rows of ``df`` at ``size`` px (default: params), from the cache."""
    torch.set_num_threads(params.train.threads)
    return trunk_features(trunk, list(df["path"]), list(df["sha256"]), size or params.train.input_size(), root=root)


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


def fit_config(settings: TimmFamily, params: Params, salt: int = 0, progress: bool = True) -> FitConfig:
    return FitConfig(max_epochs=settings.max_epochs, patience=settings.patience, lr=settings.lr,
                     weight_decay=settings.weight_decay, batch_size=settings.batch_size,
                     seed=params.seed * 1000 + salt, threads=params.train.threads, progress=progress)


@torch.no_grad()
def predict(fn, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``fn`` over ``x`` in batches, in inference mode; float32 output concatenated."""
    outs = [fn(x[i:i + batch_size].float().contiguous(memory_format=torch.channels_last)
               if x.dim() == 4 else x[i:i + batch_size].float())
            for i in range(0, len(x), batch_size)]
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


def write_train_record(family: str, root: Path, started: float, df: pd.DataFrame, **extra) -> dict:
    record = {"family": family, "seconds": round(time.perf_counter() - started, 1), "data": data_fingerprint(df),
              **extra}
    write_json(record, model_dir(family, root) / "train.json")
    return record


def read_json(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def read_train_record(family: str, root: Path) -> dict:
    return read_json(model_dir(family, root) / "train.json")


def as_bool_tensor(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))
