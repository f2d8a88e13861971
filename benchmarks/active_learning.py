"""Labels chosen by uncertainty against labels chosen at random: how many labels a prohibited-item
classifier needs to reach its recall target.

    .venv/bin/python benchmarks/active_learning.py            # writes benchmarks/results/active_learning.{json,png}

Every number comes from ``active_learning.experiment`` in params.yaml (and ``recall_targets.prohibited``):

* Data. An unlabelled pool and a fixed labelled test set, rendered by the project's generator
  (``pipelines.data.generate``) with ``shift`` (default ``prohibited_rate=0.1``: each of the 10 categories on
  about 1% of the photos, the measured category rare as in live traffic). Cached under
  ``.cache/bench/active_learning/``.
* Oracle. Asked about a pool photo, it answers from the generator's ground truth (``category`` in the
  photo's ``prohibited`` list): an annotator who never errs.
* Learner. The prohibited family's frozen ImageNet trunk (EfficientNet-Lite0 cut at
  ``train.prohibited.trunk_split``) at ``image_size`` px, computed once per photo (``pipelines.train.features``
  cache); each round a small head is trained from scratch on the labelled photos' trunk outputs (1x1 conv
  to 128 channels, BN, ReLU, average + max pooling, one logit; ``STEPS`` Adam steps on batches a quarter
  of which are positives, drawn with replacement; no validation split, labels are what is scarce). Cheap rounds are what make
  repeated runs affordable; the production tail (``reviewops train prohibited``) is larger.
* Seed. ``seed_labels`` pool photos are labelled before the first round, ``seed_positives`` of them
  positives (the few reported cases a team starts from), the rest drawn at random.
* Rounds. ``k`` labels per round for ``rounds`` rounds, then ``then_k`` per round until the pool is
  exhausted (where both strategies have the same labels). Uncertainty: the unlabelled photos with the
  highest ``1 - |2p - 1|`` under the current head; random: a random draw. Both skip near-duplicates with
  the rule ``reviewops select`` uses (``pipelines.active_learning.select.pick``: grid embedding of the trunk
  output within ``active_learning.duplicate_distance``, or pHash within ``validation.phash_max_distance``).
* Metric. On the test set, recall at precision >= ``precision`` (the highest recall a threshold reaches
  with at least that precision), against labels used; the labels a strategy needs are the first budget
  at which it reaches ``recall_targets.prohibited`` (and, reported beside it, the gate floor
  ``gate.recall_floors.prohibited``).
* Repetitions. ``repetitions`` runs; repetition r changes the seed set, the random draws and the heads'
  initialisation, and both strategies of a repetition share its seed set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_curve
from torch import nn

from pipelines.active_learning.scores import grid_embedding, uncertainty
from pipelines.active_learning.select import pick
from pipelines.train.features import trunk_features
from pipelines.data.generate import generate_batch, parse_shift
from pipelines.data.manifest import read_manifest
from pipelines.params import load_params
from pipelines.data.phash import phash_file
from pipelines.train.trunk import Trunk

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = ROOT / ".cache" / "bench" / "active_learning"
STEPS = 300
BATCH = 64
STRATEGIES = ("uncertainty", "random")


# --- data -----------------------------------------------------------------------------------------------

def sample_set(params, name: str, n: int, seed: int, shift: dict, work: Path) -> pd.DataFrame:
    """A generated batch (made once, then read from the cache) with absolute photo paths."""
    batch = work / f"{name}-n{n}-s{seed}"
    if not batch.exists():
        started = time.perf_counter()
        generate_batch(work, batch.name, n, seed, params=params, shift=shift, workers=os.cpu_count(), progress=True)
        print(f"generated {name}: {n} photos in {time.perf_counter() - started:.0f} s", flush=True)
    df = read_manifest(batch)
    df["path"] = [str(batch / rel) for rel in df["image"]]
    return df


def phashes(df: pd.DataFrame, work: Path) -> list[str]:
    cache = work / f"phash-{df['batch'].iloc[0]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    hashes = [phash_file(p) for p in df["path"]]
    cache.write_text(json.dumps(hashes))
    return hashes


# --- the learner ----------------------------------------------------------------------------------------

class Head(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))
        self.logit = nn.Linear(256, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = self.proj(f)
        return self.logit(torch.cat([z.mean((2, 3)), z.amax((2, 3))], 1)).squeeze(1)


def train_head(x: torch.Tensor, y: np.ndarray, seed: int) -> Head:
    """``STEPS`` Adam steps on batches of ``BATCH`` photos, a quarter of them positives (drawn with
    replacement; the family's trainer oversamples positives the same way): the same cost every round."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = Head(x.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    pos, neg = np.flatnonzero(y), np.flatnonzero(y == 0)
    n_pos = BATCH // 4 if len(pos) else 0
    target = torch.as_tensor(np.r_[np.ones(n_pos), np.zeros(BATCH - n_pos)], dtype=torch.float32)
    head.train()
    for _ in range(STEPS):
        idx = np.r_[rng.choice(pos, n_pos), rng.choice(neg, BATCH - n_pos)] if n_pos else rng.choice(neg, BATCH)
        loss = nn.functional.binary_cross_entropy_with_logits(head(x[torch.as_tensor(idx)]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def predict(head: Head, x: torch.Tensor) -> np.ndarray:
    return torch.cat([torch.sigmoid(head(x[i:i + 1024])) for i in range(0, len(x), 1024)]).numpy()


def recall_at_precision(y: np.ndarray, p: np.ndarray, precision: float) -> float:
    prec, rec, _ = precision_recall_curve(y, p)
    ok = prec >= precision
    return float(rec[ok].max()) if ok.any() else 0.0


# --- one run --------------------------------------------------------------------------------------------

def schedule(exp, pool_size: int) -> list[int]:
    """Labels used after the seed and after each round: ``k`` per round, then ``then_k`` to the whole pool."""
    budgets = [exp.seed_labels]
    while budgets[-1] < pool_size:
        step = exp.k if len(budgets) <= exp.rounds else exp.then_k
        budgets.append(min(pool_size, budgets[-1] + step))
    return budgets


def seed_set(y: np.ndarray, exp, rng: np.random.Generator) -> np.ndarray:
    pos, neg = np.flatnonzero(y), np.flatnonzero(y == 0)
    return np.concatenate([rng.choice(pos, exp.seed_positives, replace=False),
                           rng.choice(neg, exp.seed_labels - exp.seed_positives, replace=False)])


def run(strategy: str, rep: int, data: dict, exp, params, budgets: list[int]) -> list[dict]:
    x, y, emb, hashes = data["pool_x"], data["pool_y"], data["pool_emb"], data["pool_phash"]
    rng = np.random.default_rng([params.seed, rep])
    labelled = np.zeros(len(y), dtype=bool)
    labelled[seed_set(y, exp, np.random.default_rng([params.seed, rep, 0]))] = True
    curve, p_pool = [], None        # p_pool: the pool's probabilities of the last round's head (step 0 sets it)
    for step, budget in enumerate(budgets):
        if step:
            unlabelled = np.flatnonzero(~labelled)
            if strategy == "uncertainty":
                order = unlabelled[np.argsort(-uncertainty(p_pool[unlabelled]), kind="stable")]
            else:
                order = rng.permutation(unlabelled)
            kept, _, _ = pick(order, emb, budget - labelled.sum(), params.active_learning.duplicate_distance,
                              lambda i: hashes[i], params.validation.phash_max_distance, [])
            if len(kept) < budget - labelled.sum():    # only near-duplicates left: they are labelled too
                chosen = set(kept)
                kept = list(kept) + [i for i in order if i not in chosen][:budget - labelled.sum() - len(kept)]
            labelled[kept] = True
        idx = np.flatnonzero(labelled)
        head = train_head(x[idx], y[idx], seed=params.seed * 1000 + rep * 100 + step)
        p_pool, p_test = predict(head, x), predict(head, data["test_x"])
        curve.append({"labels": int(labelled.sum()), "positives_labelled": int(y[labelled].sum()),
                      "recall": recall_at_precision(data["test_y"], p_test, exp.precision)})
    return curve


def labels_needed(curve: list[dict], target: float) -> int | None:
    return next((c["labels"] for c in curve if c["recall"] >= target), None)


# --- report -------------------------------------------------------------------------------------------

def summary(runs: dict, target: float) -> dict:
    out = {}
    for strategy, curves in runs.items():
        needed = [labels_needed(c, target) for c in curves]
        reached = [n for n in needed if n is not None]
        out[strategy] = {"per_repetition": needed,
                         "mean": float(np.mean(reached)) if len(reached) == len(needed) else None,
                         "min": min(reached) if reached else None, "max": max(reached) if reached else None}
    u, r = out["uncertainty"]["per_repetition"], out["random"]["per_repetition"]
    ratios = [b / a for a, b in zip(u, r) if a is not None and b is not None]
    out["ratio_random_over_uncertainty"] = {
        "of_means": round(out["random"]["mean"] / out["uncertainty"]["mean"], 2)
        if out["random"]["mean"] and out["uncertainty"]["mean"] else None,
        "per_repetition": [round(v, 2) for v in ratios] if len(ratios) == len(u) else None}
    return out


def plot(runs: dict, target: float, floor: float, exp, category: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy, colour in zip(STRATEGIES, ("tab:red", "tab:blue")):
        labels = np.array([c["labels"] for c in runs[strategy][0]])
        recall = np.array([[c["recall"] for c in curve] for curve in runs[strategy]])
        ax.plot(labels, recall.mean(0), color=colour, marker=".", label=f"{strategy} (mean of {len(recall)})")
        ax.fill_between(labels, recall.min(0), recall.max(0), color=colour, alpha=0.2)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"recall target {target}")
    ax.axhline(floor, color="grey", ls=":", lw=1, label=f"gate floor {floor}")
    ax.set_xscale("log")
    ax.set_xlabel("labels used (seed included; log scale)")
    ax.set_ylabel(f"test recall at precision >= {exp.precision}")
    ax.set_title(f"prohibited:{category}: labels chosen by uncertainty vs at random (band: min-max over runs)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--work", type=Path, default=WORK, help="generated photos and pHashes (a cache)")
    ap.add_argument("--out", type=Path, default=RESULTS / "active_learning.json")
    args = ap.parse_args()
    started = time.perf_counter()
    params = load_params(args.params)
    exp = params.active_learning.experiment
    torch.set_num_threads(params.train.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    shift = parse_shift(exp.shift)
    pool = sample_set(params, "pool", exp.pool.n, exp.pool.seed, shift, args.work)
    test = sample_set(params, "test", exp.test.n, exp.test.seed, shift, args.work)
    generated = time.perf_counter()

    trunk = Trunk(params.train.prohibited.trunk_split, pretrained=params.train.pretrained)
    feats = {name: trunk_features(trunk, list(df["path"]), list(df["sha256"]), exp.image_size, root=ROOT).float()
             for name, df in (("pool", pool), ("test", test))}
    label = lambda df: np.array([exp.category in list(p) for p in df["prohibited"]], dtype=np.float32)  # noqa: E731
    data = {"pool_x": feats["pool"], "pool_y": label(pool), "test_x": feats["test"], "test_y": label(test),
            "pool_emb": grid_embedding(feats["pool"]), "pool_phash": phashes(pool, args.work)}
    featured = time.perf_counter()
    torch.set_num_threads(1)   # the head is tiny: one thread is faster than two that wait on each other
    print(f"pool {len(pool)} photos ({int(data['pool_y'].sum())} {exp.category}), test {len(test)} "
          f"({int(data['test_y'].sum())}); features {tuple(feats['pool'].shape[1:])}", flush=True)

    budgets = schedule(exp, len(pool))
    target, floor = params.recall_targets.prohibited, params.gate.recall_floors.get("prohibited", 0.9)
    runs = {s: [] for s in STRATEGIES}
    for rep in range(exp.repetitions):
        for strategy in STRATEGIES:
            t = time.perf_counter()
            curve = run(strategy, rep, data, exp, params, budgets)
            runs[strategy].append(curve)
            print(f"rep {rep} {strategy:11s} {time.perf_counter() - t:5.0f} s: labels needed for recall "
                  f"{target}: {labels_needed(curve, target)}, for {floor}: {labels_needed(curve, floor)}; "
                  f"recall at {budgets[min(len(budgets) - 1, exp.rounds)]} labels "
                  f"{curve[min(len(curve) - 1, exp.rounds)]['recall']:.3f}", flush=True)

    at = {}
    for b in sorted({exp.seed_labels + exp.k * n for n in (2, 4, exp.rounds)} | {2000, 5000, budgets[-1]}):
        if b in budgets:
            j = budgets.index(b)
            at[str(b)] = {s: {"recall_mean": round(float(np.mean([c[j]["recall"] for c in runs[s]])), 4),
                              "recall_min": round(min(c[j]["recall"] for c in runs[s]), 4),
                              "recall_max": round(max(c[j]["recall"] for c in runs[s]), 4),
                              "positives_labelled_mean": round(float(np.mean([c[j]["positives_labelled"]
                                                                              for c in runs[s]])), 1)}
                          for s in STRATEGIES}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    plot(runs, target, floor, exp, exp.category, png)
    result = {
        "command": " ".join([".venv/bin/python", *map(shlex.quote, [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": 1, "python": platform.python_version()},
        "setup": {"category": exp.category, "shift": exp.shift, "oracle": "generator ground truth",
                  "pool": {"n": len(pool), "seed": exp.pool.seed, "positives": int(data["pool_y"].sum())},
                  "test": {"n": len(test), "seed": exp.test.seed, "positives": int(data["test_y"].sum())},
                  "seed_labels": exp.seed_labels, "seed_positives": exp.seed_positives, "k": exp.k,
                  "rounds": exp.rounds, "then_k": exp.then_k, "repetitions": exp.repetitions,
                  "features": {"trunk": "tf_efficientnet_lite0 (ImageNet, frozen)",
                               "trunk_split": params.train.prohibited.trunk_split, "image_size": exp.image_size,
                               "shape": list(feats["pool"].shape[1:])},
                  "head": f"1x1 conv 128 + BN + ReLU, avg+max pool, logit; Adam 1e-3, {STEPS} steps of batch {BATCH} "
                          f"(a quarter positives, with replacement), BCE; retrained from scratch each round",
                  "near_duplicates": {"duplicate_distance": params.active_learning.duplicate_distance,
                                      "phash_max_distance": params.validation.phash_max_distance},
                  "metric": f"test recall at precision >= {exp.precision}",
                  "recall_target": target, "gate_floor": floor},
        "labels_needed": {"recall_target": summary(runs, target), "gate_floor": summary(runs, floor)},
        "at_budgets": at,
        "curves": {s: [[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()} for c in curve]
                       for curve in runs[s]] for s in STRATEGIES},
        "seconds": {"generate": round(generated - started, 1), "features": round(featured - generated, 1),
                    "rounds": round(time.perf_counter() - featured, 1), "total": round(time.perf_counter() - started, 1)},
        "plot": os.path.relpath(png, ROOT),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["labels_needed"], indent=1))
    print(f"wrote {args.out} and {png} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
