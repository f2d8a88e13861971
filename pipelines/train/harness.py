"""The one training loop of every timm family: seeded, early stopping on validation, progress bar,
checkpoints (best and last), resumable.

A family supplies the model, a loss ``loss_fn(model, batch) -> tensor`` and a validation score
``score_fn(model, loader) -> float`` (higher is better); the loop owns everything else. Resuming
from ``last.pt`` restores model, optimiser, scheduler, early-stopping state and every random
generator, so an interrupted run that resumes ends with the same weights as one that was not
interrupted (tested).

``device`` (:func:`pipelines.train.device.resolve` of ``train.device``): the model and every batch,
training and validation, are moved there for the fit, and the model goes back to the device it came
from at the end, so what a family saves or exports afterwards is as before. Checkpoints hold the state
dicts as they are and are loaded with ``map_location`` to the fit's device: a run interrupted on a GPU
resumes on the CPU and the other way round.

``ema_decay`` (``train.<family>.ema_decay``; 0: off): validation scores, and the checkpoints keep, an
exponential moving average of the weights over the training steps (Polyak averaging) instead of the
weights of the last step. The decay warms up as ``min(ema_decay, (1 + step) / (10 + step))`` so the first
steps are not averaged with the initial weights; buffers (batch-norm statistics) are the model's own.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipelines.train.device import normalise, to_device


@dataclass(frozen=True)
class FitConfig:
    max_epochs: int = 20
    patience: int = 4             # epochs without a better validation score before stopping
    best_possible: float | None = None  # the validation score's ceiling (1.0 for AP): reaching it ends training,
                                        # since no later epoch can be strictly better and the best is what is kept
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    threads: int = 2
    progress: bool = True
    ema_decay: float = 0.0        # 0: the weights as trained; else validate and keep their moving average


@dataclass
class FitResult:
    best_score: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    seconds: float
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":                   # dropout on the GPU draws from the device's own generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())   # loaded with map_location: the generator states must be CPU bytes
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _identity(config: dict) -> dict:
    """The settings a resumed run must share with the interrupted one (the LR schedule spans max_epochs)."""
    return {k: v for k, v in config.items() if k not in ("progress", "threads")}


class _OnDevice:
    """A validation loader whose batches arrive on ``device`` (what ``score_fn`` is given)."""

    def __init__(self, loader: Iterable, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self):
        return (to_device(batch, self.device) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class WeightAverage:
    """The exponential moving average of ``model``'s ``trainable`` parameters (a copy of the model, in eval
    mode, that the loop validates and checkpoints in place of the trained one)."""

    def __init__(self, model: torch.nn.Module, trainable: Iterable[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        ids = {id(p) for p in trainable}
        self._pairs = [(a, p) for a, p in zip(self.model.parameters(), model.parameters()) if id(p) in ids]
        self._buffers = list(zip(self.model.buffers(), model.buffers()))

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for average, p in self._pairs:
            average.lerp_(p.detach(), 1.0 - decay)
        for average, b in self._buffers:
            average.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def epoch_loader(dataset: Dataset, cfg: FitConfig, epoch: int, sampler=None,
                 collate_fn: Callable | None = None) -> DataLoader:
    """The training loader of one epoch: its shuffle depends on (seed, epoch) only."""
    if sampler is not None:
        return DataLoader(dataset, batch_sampler=sampler(epoch), collate_fn=collate_fn)
    g = torch.Generator().manual_seed(cfg.seed * 10_007 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=len(dataset) >
                      cfg.batch_size, collate_fn=collate_fn)


def fit(model: torch.nn.Module, train_set: Dataset, val_loader: Iterable,
        loss_fn: Callable[[torch.nn.Module, object], torch.Tensor],
        score_fn: Callable[[torch.nn.Module, Iterable], float],
        cfg: FitConfig, out_dir: str | Path, *, params: Iterable[torch.nn.Parameter] | None = None,
        batch_sampler: Callable[[int], Iterable] | None = None, collate_fn: Callable | None = None,
        name: str = "model", device: torch.device | str = "cpu") -> FitResult:
    """Train ``model`` until validation stops improving; ``out_dir`` receives best.pt and last.pt.

    ``params``: the trainable parameters (default: all that require grad), so a family can freeze
    a pretrained trunk. ``batch_sampler(epoch)`` replaces the shuffled loader (P x K batches).
    ``device``: where the fit runs; ``loss_fn`` and ``score_fn`` get the model there, and ``loss_fn``
    its batch there (tensors, or tuples, lists and dicts of them); the model is returned where it was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = normalise(device)
    home = next(iter(model.parameters()), torch.empty(0)).device
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model.to(device)                            # in place: the parameters a family passed stay the same objects
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if any(p.device != device for p in trainable):
        raise ValueError(f"{name}: some trainable parameters are not on {device} after moving the model there: "
                         f"pass parameters of the model itself")
    val_loader = _OnDevice(val_loader, device)
    average = WeightAverage(model, trainable, cfg.ema_decay) if cfg.ema_decay > 0 else None
    judged = average.model if average is not None else model   # what validation scores and checkpoints keep
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.max_epochs))
    last, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "history": [], "seconds": 0.0}
    if last.exists():  # resume
        ckpt = torch.load(last, map_location=device, weights_only=False)
        if _identity(ckpt["config"]) != _identity(asdict(cfg)):
            raise ValueError(f"{last} was written with another configuration; remove {out_dir} to start afresh")
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        if average is not None:
            average.load_state_dict(ckpt["average"])
        _set_rng_state(ckpt["rng"], device)
    start = time.perf_counter() - state["seconds"]
    stopped = False
    while state["epoch"] < cfg.max_epochs:
        if state["epoch"] - state["best_epoch"] > cfg.patience and state["best_epoch"] >= 0:
            stopped = True
            break
        if cfg.best_possible is not None and state["best_score"] >= cfg.best_possible:
            stopped = True  # a resumed run that had already reached the ceiling
            break
        epoch = state["epoch"]
        model.train()
        loader = epoch_loader(train_set, cfg, epoch, batch_sampler, collate_fn)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{cfg.max_epochs}", leave=False, disable=not cfg.progress)
        for batch in bar:
            loss = loss_fn(model, to_device(batch, device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if average is not None:
                average.update()
            total, count = total + loss.item(), count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        scheduler.step()
        model.eval()
        with torch.no_grad():
            score = float(score_fn(judged, val_loader))
        state["history"].append({"epoch": epoch + 1, "train_loss": total / max(1, count), "val_score": score})
        if cfg.progress:
            tqdm.write(f"{name} epoch {epoch + 1}: train loss {total / max(1, count):.4f}, val score {score:.4f}")
        if score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch
            _atomic_save({"model": judged.state_dict(), "epoch": epoch + 1, "val_score": score}, best_path)
        state["epoch"] = epoch + 1
        state["seconds"] = time.perf_counter() - start
        _atomic_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                      "scheduler": scheduler.state_dict(), "state": state, "rng": _rng_state(device),
                      "config": asdict(cfg), "average": average.state_dict() if average is not None else None}, last)
        if cfg.best_possible is not None and state["best_score"] >= cfg.best_possible:
            stopped = True
            if cfg.progress:
                tqdm.write(f"{name}: validation score reached its ceiling {cfg.best_possible}: stopping")
            break
    if not best_path.exists():
        raise RuntimeError(f"{name}: no epoch gave a validation score better than -inf (NaN scores?); "
                           f"see {last} and the history in it")
    best = torch.load(best_path, map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    model.to(home)
    return FitResult(best_score=state["best_score"], best_epoch=state["best_epoch"] + 1, epochs_run=state["epoch"],
                     stopped_early=stopped, seconds=time.perf_counter() - start, history=state["history"],
                     checkpoint=best_path)
