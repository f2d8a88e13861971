"""Screen per-category prohibited heads on a trained demo workspace, on cached trunk features.

Each head is one category's own parameters on features that every category shares (the frozen ImageNet trunk), so
that 20 categories can cost little more than 1 (issue 21). For each head design and seed, every category is trained
as the family trains it (its positives ``positive_repeats`` times plus ``negatives_per_epoch`` fresh negatives an
epoch, AdamW and a cosine schedule, the epoch kept by validation average precision), its threshold calibrated on
validation exactly as ``reviewops evaluate`` does (``recall_targets.prohibited`` at ``recall_targets.confidence``),
and measured on the frozen test split: recall per category, the photos it misses, and the share of clean test photos
that any category flags (what the family costs the whole reviewer). The workspace's own trained models (the full
per-category tail) are scored the same way as the reference.

    python benchmarks/prohibited_heads.py /tmp/demo2 --seeds 7 8 --heads light5 light7 light57 probe8

Writes benchmarks/results/prohibited_heads.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, log_loss
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.data.dataset import split_frame  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from pipelines.serve.decision import flagged  # noqa: E402
from pipelines.train.evaluate import calibrate  # noqa: E402
from pipelines.train.families import common, prohibited  # noqa: E402
from pipelines.train.trunk import Trunk  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "prohibited_heads.json"


class Proj(nn.Module):
    """1x1 conv to ``width`` channels, BN, ReLU6, average + max pooling: a bag of local detectors."""

    def __init__(self, channels: int, width: int = 256, context: bool = False):
        super().__init__()
        ctx = [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels),
               nn.ReLU6()] if context else []
        self.proj = nn.Sequential(*ctx, nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        self.num_features = 2 * width

    def forward(self, f):
        z = self.proj(f)
        return torch.cat([z.mean((2, 3)), z.amax((2, 3))], 1)


class Head(nn.Module):
    """One category: a projection per feature level read, pooled, concatenated, dropout, one logit."""

    def __init__(self, levels: dict[str, int], width: int, context: bool = False):
        super().__init__()
        self.levels = list(levels)
        self.projs = nn.ModuleDict({k: (Proj(c, width, context) if c > 0 else nn.Identity())
                                    for k, c in levels.items()})
        n = sum(2 * width if c > 0 else -c for c in levels.values())
        self.drop, self.fc = nn.Dropout(0.2), nn.Linear(n, 1)

    def forward(self, feats: dict[str, torch.Tensor]):
        return self.fc(self.drop(torch.cat([self.projs[k](feats[k]) for k in self.levels], 1))).squeeze(1)


# name -> {feature level: input channels (negative: an already pooled vector of that size)}, projection width,
# a depthwise 3x3 before the projection
HEADS = {
    "light5": ({"s5": 112}, 256, False),              # today's tail_stages: 0 at trunk_split 5
    "light7": ({"s7": 320}, 256, False),              # stages 5-6 shared (frozen), then the same projection
    "light57": ({"s5": 112, "s7": 320}, 128, False),  # both levels, half as wide each
    "probe8": ({"p8": -2560}, 0, False),              # the whole frozen network's head conv, pooled: linear
    "ctx5": ({"s5": 112}, 256, True),
    "ctx57": ({"s5": 112, "s7": 320}, 128, True),
    "wide5": ({"s5": 112}, 512, False),
    "neck7": ({"n7": 320}, 256, False),               # on the shared neck (stages 5-6 fine-tuned once, all categories)
    "neck57": ({"s5": 112, "n7": 320}, 128, False),
    "neckw7": ({"n7": 320}, 512, False),
    "neckc7": ({"n7": 320}, 256, True),
}


class Neck(nn.Module):
    """Stages 5-6 from ImageNet, fine-tuned once on every category at once (multi-label), then frozen and shared."""

    def __init__(self, donor: nn.Module, categories: int):
        super().__init__()
        import copy
        self.blocks = copy.deepcopy(donor.blocks[5:7]).requires_grad_(True)
        self.fc = nn.Linear(640, categories)

    def features(self, s5):
        return self.blocks(s5)

    def forward(self, s5):
        z = self.blocks(s5)
        return self.fc(nn.functional.dropout(torch.cat([z.mean((2, 3)), z.amax((2, 3))], 1), 0.2, self.training))


def train_neck(donor, feats, labels, settings, seed: int, epochs: int) -> tuple[Neck, dict]:
    """Multi-label BCE over every category; each epoch every positive of any category plus fresh negatives; the
    epoch of best mean validation AP is kept."""
    torch.manual_seed(seed)
    neck = Neck(donor, labels["train"].shape[1])
    opt = torch.optim.AdamW(neck.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    y_tr, y_val = labels["train"], labels["val"]
    pos, neg = np.flatnonzero(y_tr.any(1)), np.flatnonzero(~y_tr.any(1))
    best, state, history = -1.0, None, []
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        negs = rng.choice(neg, size=min(len(neg), 2 * len(pos)), replace=False)
        order = rng.permutation(np.concatenate([pos, negs]))
        neck.train()
        for i in range(0, len(order), settings.batch_size):
            b = order[i:i + settings.batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(neck(feats["train"]["s5"][b].float()),
                                                                  torch.as_tensor(y_tr[b], dtype=torch.float32))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        neck.eval()
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(neck(feats["val"]["s5"][i:i + 256].float()))
                           for i in range(0, len(y_val), 256)]).numpy()
        ap = float(np.mean([average_precision_score(y_val[:, j], p[:, j]) for j in range(y_val.shape[1])]))
        history.append(round(ap, 4))
        print(f"neck epoch {epoch + 1}: mean val AP {ap:.4f}", flush=True)
        if ap > best:
            best, state = ap, {k: v.clone() for k, v in neck.state_dict().items()}
    neck.load_state_dict(state)
    return neck.eval(), {"val_mean_ap": history, "best": round(best, 4)}


@torch.no_grad()
def add_neck(neck: Neck, feats: dict) -> None:
    feats["n7"] = torch.cat([neck.features(feats["s5"][i:i + 64].float()).half() for i in range(0, len(feats["s5"]), 64)])


@torch.no_grad()
def shared_levels(x5: torch.Tensor, donor: nn.Module) -> dict[str, torch.Tensor]:
    """Stage-4 output (the cached split-5 features), stages 5-6 run on it, and the head conv pooled."""
    s7, p8 = [], []
    for i in range(0, len(x5), 64):
        z = donor.blocks[5:7](x5[i:i + 64].float())
        h = donor.bn2(donor.conv_head(z))          # timm's BatchNormAct2d: batch norm and ReLU6
        s7.append(z.half())
        p8.append(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1).half())
    return {"s5": x5, "s7": torch.cat(s7), "p8": torch.cat(p8)}


def take(feats: dict, idx, keys) -> dict:
    return {k: feats[k][idx].float() for k in keys}


@torch.no_grad()
def scores(model: Head, feats: dict) -> np.ndarray:
    model.eval()
    n = len(next(iter(feats.values())))
    out = [torch.sigmoid(model(take(feats, slice(i, i + 256), model.levels))) for i in range(0, n, 256)]
    return torch.cat(out).numpy()


def train_head(name: str, feats_tr, y_tr, feats_val, y_val, settings, seed: int, selection: str, flip: bool,
               target: float = 0.97, confidence: float = 0.7):
    levels, width, context = HEADS[name]
    torch.manual_seed(seed)
    model = Head(levels, width, context)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.max_epochs)
    pos, neg = np.flatnonzero(y_tr), np.flatnonzero(y_tr == 0)
    best, best_state, best_epoch = None, None, -1
    for epoch in range(settings.max_epochs):
        if best_epoch >= 0 and epoch - best_epoch > settings.patience:
            break
        rng = np.random.default_rng([seed, epoch])
        negs = rng.choice(neg, size=min(len(neg), settings.negatives_per_epoch), replace=False)
        order = rng.permutation(np.concatenate([np.repeat(pos, settings.positive_repeats), negs]))
        model.train()
        for i in range(0, len(order), settings.batch_size):
            b = order[i:i + settings.batch_size]
            f = take(feats_tr, b, model.levels)
            if flip:
                f = {k: (v.flip(3) if v.dim() == 4 and rng.random() < 0.5 else v) for k, v in f.items()}
            loss = nn.functional.binary_cross_entropy_with_logits(model(f), torch.as_tensor(y_tr[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        s = scores(model, feats_val)
        ap = float(average_precision_score(y_val, s))
        if selection == "fpr":        # the share of validation negatives flagged at the calibrated threshold
            thr, _ = calibrate(s, y_val.astype(bool), target, confidence)
            score = (-float(flagged(s[y_val == 0], thr).mean()), ap)
        else:
            score = (ap,) if selection == "ap" else (ap, -float(log_loss(y_val, np.clip(s, 1e-7, 1 - 1e-7))))
        if best is None or score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if selection == "ap" and ap >= 1.0:
            break
    model.load_state_dict(best_state)
    return model, best_epoch + 1


def mid_gap(scores, labels, thr: float) -> float:
    """The threshold halfway (in logit space) between ``thr`` and the highest validation negative under it: the
    same validation flags, the widest margin on both sides."""
    below = scores[(~labels) & (scores < thr)]
    if not len(below):
        return thr
    logit = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7) / (1 - np.clip(p, 1e-7, 1 - 1e-7)))
    mid = (logit(thr) + logit(below.max())) / 2
    return float(1 / (1 + np.exp(-mid)))


def measure(p_val, p_test, val, test, categories, params, placement: str = "min") -> dict:
    clean = np.array([len(p) == 0 for p in test["prohibited"]])
    per, flags = {}, []
    for j, c in enumerate(categories):
        yv, yt = prohibited._labels(val, c).astype(bool), prohibited._labels(test, c).astype(bool)
        thr, _ = calibrate(p_val[:, j], yv, params.recall_targets.prohibited, params.recall_targets.confidence)
        if placement == "mid":
            thr = mid_gap(p_val[:, j], yv, thr)
        f = flagged(p_test[:, j], thr)
        flags.append(f)
        per[c] = {"threshold": round(float(thr), 6), "recall": round(float(f[yt].mean()), 4),
                  "missed": int((~f & yt).sum()), "positives": int(yt.sum()),
                  "clean_flagged": round(float(f[clean].mean()), 4),
                  "ap": round(float(average_precision_score(yt, p_test[:, j])), 4)}
    union = np.stack(flags, 1).any(1)
    return {"lowest_recall": min(v["recall"] for v in per.values()),
            "missed": sum(v["missed"] for v in per.values()),
            "positives": sum(v["positives"] for v in per.values()),
            "categories_below_floor": sorted(c for c, v in per.items()
                                             if v["recall"] < params.gate.recall_floors["prohibited"]),
            "clean_flagged_any": round(float(union[clean].mean()), 4),
            "mean_ap": round(float(np.mean([v["ap"] for v in per.values()])), 4), "categories": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--heads", nargs="+", default=list(HEADS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[7])
    ap.add_argument("--selection", choices=["ap", "ap_then_ll", "fpr"], default="ap")
    ap.add_argument("--flip", action="store_true", help="flip feature maps left-right at random in training")
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--patience", type=int)
    ap.add_argument("--neck-epochs", type=int, default=8)
    ap.add_argument("--neck-cache", type=Path, help="the neck's weights: read when the file exists, else written")
    ap.add_argument("--params", type=Path, help="params.yaml to read (default: the workspace's own)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--append", action="store_true", help="add rows to --out instead of replacing it")
    args = ap.parse_args()
    started = time.perf_counter()
    params = load_params(args.params or args.root / "params.yaml")
    settings = params.train.prohibited
    settings = settings.model_copy(update={k: v for k, v in (("max_epochs", args.max_epochs),
                                                             ("patience", args.patience)) if v})
    torch.set_num_threads(params.train.threads)
    df = common.load_frame(args.root)
    frames = {s: split_frame(df, s) for s in ("train", "val", "test")}
    trunk = Trunk(5, pretrained=params.train.pretrained)
    feats = {s: shared_levels(common.features(args.root, params, trunk, f, size=256), trunk._rest)
             for s, f in frames.items()}
    print(f"features ready in {time.perf_counter() - started:.0f} s", flush=True)
    categories = list(params.prohibited.categories)
    rows = []
    if any(h.startswith("neck") for h in args.heads):
        t0 = time.perf_counter()
        labels = {s: np.stack([prohibited._labels(frames[s], c) for c in categories], 1) > 0 for s in ("train", "val")}
        if args.neck_cache and args.neck_cache.exists():
            neck = Neck(trunk._rest, len(categories))
            neck.load_state_dict(torch.load(args.neck_cache))
            neck.eval()
            record = {"from": str(args.neck_cache)}
        else:
            neck, record = train_neck(trunk._rest, feats, labels, settings, params.seed, args.neck_epochs)
            if args.neck_cache:
                torch.save(neck.state_dict(), args.neck_cache)
        for f in feats.values():
            add_neck(neck, f)
        rows.append({"head": "neck", "seconds": round(time.perf_counter() - t0, 1), "epochs": args.neck_epochs,
                     **record})
    if "reference" not in {r.get("head") for r in _old(args)} and not args.no_reference:
        own = params.train.prohibited.model_copy(update={"neck": False})      # the workspace's own: a tail each
        ref = params.model_copy(update={"train": params.train.model_copy(update={"prohibited": own})})
        model = prohibited.load_combined(args.root, ref)
        p = {s: prohibited.probabilities(args.root, ref, frames[s], model) for s in ("val", "test")}
        rows.append({"head": "reference", "what": "the workspace's trained full tails (stages 5-6 + head conv each)",
                     **measure(p["val"], p["test"], frames["val"], frames["test"], categories, params)})
        rows[-1]["mid_gap"] = measure(p["val"], p["test"], frames["val"], frames["test"], categories, params, "mid")
        print("   mid gap:", {k: rows[-1]["mid_gap"][k] for k in ("lowest_recall", "missed", "clean_flagged_any")},
              flush=True)
        print("reference", {k: rows[-1][k] for k in ("lowest_recall", "missed", "clean_flagged_any", "mean_ap")},
              flush=True)
    for head in args.heads:
        for seed in args.seeds:
            t0 = time.perf_counter()
            p_val, p_test, epochs = [], [], {}
            for c in categories:
                y = {s: prohibited._labels(frames[s], c) for s in ("train", "val")}
                s = seed * 1000 + prohibited.category_seed(params, c) % 1000
                model, epochs[c] = train_head(head, feats["train"], y["train"], feats["val"], y["val"], settings, s,
                                              args.selection, args.flip, params.recall_targets.prohibited,
                                              params.recall_targets.confidence)
                p_val.append(scores(model, feats["val"]))
                p_test.append(scores(model, feats["test"]))
            row = {"head": head, "seed": seed, "selection": args.selection, "flip": args.flip,
                   "max_epochs": settings.max_epochs, "patience": settings.patience, "epochs_kept": epochs,
                   "seconds": round(time.perf_counter() - t0, 1),
                   **measure(np.stack(p_val, 1), np.stack(p_test, 1), frames["val"], frames["test"], categories,
                             params)}
            row["mid_gap"] = {k: v for k, v in measure(np.stack(p_val, 1), np.stack(p_test, 1), frames["val"],
                                                       frames["test"], categories, params, "mid").items()}
            np.savez(args.out.with_name(f"{args.out.stem}-{head}-{seed}.npz"), val=np.stack(p_val, 1),
                     test=np.stack(p_test, 1))
            rows.append(row)
            print("   mid gap:", {k: row["mid_gap"][k] for k in ("lowest_recall", "missed", "clean_flagged_any")},
                  flush=True)
            print(head, seed, {k: row[k] for k in ("lowest_recall", "missed", "categories_below_floor",
                                                   "clean_flagged_any", "mean_ap", "seconds")}, flush=True)
    old = _old(args)
    out = {"command": "python benchmarks/prohibited_heads.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "machine": {"cpus": torch.get_num_threads(),
                                                          "processor": platform.machine()},
           "workspace": str(args.root), "rows": old + rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")


def _old(args) -> list:
    return json.loads(args.out.read_text())["rows"] if args.append and args.out.exists() else []


if __name__ == "__main__":
    main()
