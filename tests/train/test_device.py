"""train.device: one reading of the setting, batches moved by the harness, the feature cache read without
a GPU, and the device recorded beside the training time."""

from __future__ import annotations

import hashlib
import json
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Dataset

from pipelines.params import ParamsError, load_params
from pipelines.train import device as devices
from pipelines.train import harness
from pipelines.train.device import DeviceError, resolve, to_device
from pipelines.train.harness import FitConfig, fit

PROJECT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@NO_GPU
def test_auto_is_the_cpu_without_a_gpu():
    assert resolve("auto") == CPU


@NO_GPU
def test_cuda_without_a_gpu_is_a_clear_error_naming_the_setting():
    with pytest.raises(DeviceError, match=r"train\.device is 'cuda' in params\.yaml but torch sees no CUDA GPU.*auto or cpu"):
        resolve("cuda")


def test_auto_and_cuda_take_the_gpu_torch_sees_and_cpu_never_does(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve("auto") == resolve("cuda") == torch.device("cuda", 0)
    assert resolve("cpu") == CPU
    assert devices.yolo(resolve("cuda")) == 0 and devices.yolo(CPU) == "cpu"      # what ultralytics is given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == CPU
    with pytest.raises(DeviceError, match=r"train\.device"):
        resolve("cuda")


def test_the_loader_reads_the_setting_and_refuses_an_unknown_one(tmp_path):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert raw["train"]["device"] in devices.SETTINGS                       # params.yaml states it
    assert load_params(PROJECT / "params.yaml").train.device == raw["train"]["device"]
    raw["train"]["device"] = "gpu"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ParamsError, match=r"train\.device"):
        load_params(path)
    with pytest.raises(ValueError, match=r"train\.device"):
        resolve("gpu")


Pair = namedtuple("Pair", "x y")


def test_to_device_moves_every_tensor_of_a_batch_and_keeps_its_structure():
    batch = {"x": torch.ones(2, 3), "pair": Pair(torch.zeros(2), [torch.arange(3), "label", 7]),
             "t": (torch.ones(1), torch.ones(4))}
    moved = to_device(batch, torch.device("meta"))        # a device other than the one the tensors are on
    assert list(moved) == ["x", "pair", "t"] and type(moved["pair"]) is Pair and type(moved["pair"].y) is list
    assert type(moved["t"]) is tuple and [t.shape for t in moved["t"]] == [(1,), (4,)]
    tensors = [moved["x"], moved["pair"].x, moved["pair"].y[0], *moved["t"]]
    assert all(t.device.type == "meta" for t in tensors) and moved["x"].shape == (2, 3)
    assert moved["pair"].y[1:] == ["label", 7]
    # on the device the tensors are on already, the very same tensors come back: the CPU path is unchanged
    same = to_device(batch, CPU)
    assert same["x"] is batch["x"] and same["pair"].y[0] is batch["pair"].y[0] and same["t"][1] is batch["t"][1]


class DictRows(Dataset):
    def __init__(self):
        self.x = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def test_the_harness_sends_every_training_and_validation_batch_to_its_device(tmp_path, monkeypatch):
    sent = []

    def spy(batch, device):
        sent.append((type(batch), device))
        return to_device(batch, device)

    monkeypatch.setattr(harness, "to_device", spy)
    seen = []

    def loss_fn(m, batch):
        seen.append(batch)
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])

    def score_fn(m, loader):
        return -sum(float(torch.nn.functional.mse_loss(m(x), y)) for x, y in loader)

    val = [(torch.randn(3, 4), torch.randn(3, 1))]
    model = torch.nn.Linear(4, 1)
    cfg = FitConfig(max_epochs=2, patience=5, batch_size=4, seed=1, threads=1, progress=False)
    fit(model, DictRows(), val, loss_fn, score_fn, cfg, tmp_path, device=CPU)
    assert len(seen) == 6 and all(set(b) == {"x", "y"} and b["x"].shape == (4, 4) for b in seen)   # 3 batches x 2 epochs
    assert sent.count((dict, CPU)) == 6 and sent.count((tuple, CPU)) == 2 and len(sent) == 8
    assert next(model.parameters()).device == CPU
    last = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert last["state"]["epoch"] == 2 and "cuda" not in last["rng"]


def _photos(folder: Path, n: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths, [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


@NO_GPU
def test_a_full_feature_cache_is_read_without_a_gpu_and_a_photo_to_compute_needs_one(tmp_path):
    from pipelines.train.features import trunk_features
    from pipelines.train.trunk import Trunk

    paths, shas = _photos(tmp_path, 3)
    trunk = Trunk(1, pretrained=False)
    default = trunk_features(trunk, paths[:2], shas[:2], 64, root=tmp_path / "a")
    on_cpu = trunk_features(trunk, paths[:2], shas[:2], 64, root=tmp_path / "b", device="cpu")
    assert torch.equal(default, on_cpu)                   # the cpu setting computes what the CPU did before
    cached = trunk_features(trunk, paths[:2], shas[:2], 64, root=tmp_path / "b", device="cuda")
    assert cached.dtype == torch.float16 and cached.device == CPU and torch.equal(cached, on_cpu)
    with pytest.raises(DeviceError, match=r"train\.device"):
        trunk_features(trunk, paths, shas, 64, root=tmp_path / "b", device="cuda")


@pytest.mark.slow
def test_the_device_is_recorded_beside_the_training_time(copy_project):
    from pipelines.train.families import evaluate, train

    repo = copy_project()
    train("manipulation", repo)
    evaluate("manipulation", repo)
    where = devices.describe(devices.of(load_params(repo / "params.yaml")))
    record = json.loads((repo / "models" / "manipulation" / "train.json").read_text())
    metrics = json.loads((repo / "metrics" / "manipulation.json").read_text())
    assert record["seconds"] > 0 and record["device"] == where
    assert metrics["train_seconds"] == record["seconds"] and metrics["train_device"] == where
