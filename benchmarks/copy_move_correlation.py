"""Can the frozen trunk's features find a copy-move by matching regions? A check before building one.

Usage, in a workspace whose trunk features at the manipulation family's split and size are cached (any trained
workspace, e.g. after ``make demo``):

    .venv/bin/python benchmarks/copy_move_correlation.py WS --out benchmarks/results/copy_move_correlation.json

For every validation photo: the frozen trunk's output (``train.manipulation.trunk_split`` stages at its
``image_size``: 32 x 32 positions of 40 channels at 256 px), each position's feature centred over the photo and
normalised, and the cosine similarity of every pair of positions more than ``--exclude`` cells apart (a clone
moves a square of 38-77 px, 5-10 cells, by any shift). Per photo, four statistics of each position's best
matches: the highest best match, the share of positions whose best match is above 0.9, the largest gap between a
position's best and its 4th best match (a copy has one partner, a plain backdrop many), and the number of best
matches above 0.97; each over all positions and over the "textured" ones (feature norm in the photo's top 30%).
Written: the ROC AUC of each statistic, clones against clean photos and splices against clean photos. An AUC near
0.5 says the statistic does not tell edited from clean photos.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from results_header import header

STATS = ("highest_best_match", "share_best_above_0.9", "largest_best_to_4th_gap", "count_best_above_0.97")


def photo_stats(f: torch.Tensor, near: torch.Tensor, textured_only: bool) -> list[float]:
    c, h, w = f.shape
    g = f.reshape(c, h * w)
    g = g - g.mean(1, keepdim=True)
    norm = g.norm(dim=0)
    sim = torch.nn.functional.normalize(g, dim=0).T @ torch.nn.functional.normalize(g, dim=0)
    sim[near] = -1.0
    keep = torch.ones(h * w, dtype=torch.bool)
    if textured_only:
        keep = norm > norm.quantile(0.7)
        sim[~keep] = -1.0
        sim[:, ~keep] = -1.0
    top = sim.topk(4, dim=1).values[keep]
    best = top[:, 0]
    return [best.max().item(), (best > 0.9).float().mean().item(), (top[:, 0] - top[:, 3]).max().item(),
            float((best > 0.97).sum().item())]


def measure(ws: Path, exclude: int) -> dict:
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.train.families import common
    from pipelines.train.trunk import Trunk

    params = load_params(ws / "params.yaml")
    settings = params.train.family("manipulation")
    trunk = Trunk(settings.trunk_split, pretrained=params.train.pretrained)
    val = split_frame(common.load_frame(ws), "val")
    x = common.features(ws, params, trunk, val, size=params.train.input_size("manipulation")).float()
    _, _, h, w = x.shape
    cells = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    near = torch.as_tensor(np.abs(cells[:, None] - cells[None]).max(-1) <= exclude)
    kind = val["manipulation_type"].to_numpy()
    clean = kind == "none"
    out = {"photos": {k: int((kind == k).sum()) for k in sorted(set(kind))}, "feature_shape": list(x.shape[1:]),
           "auc": {}}
    for textured in (False, True):
        s = np.array([photo_stats(x[i], near, textured) for i in range(len(x))])
        for edit in ("clone", "splice"):
            sel = clean | (kind == edit)
            for j, name in enumerate(STATS):
                key = f"{edit}_vs_clean.{'textured' if textured else 'all'}_positions.{name}"
                out["auc"][key] = round(float(roc_auc_score(kind[sel] == edit, s[sel, j])), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--exclude", type=int, default=2, help="pairs within this many cells (Chebyshev) are not matched")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    result = measure(args.workspace.resolve(), args.exclude)
    print(json.dumps(result, indent=1))
    command = "python benchmarks/copy_move_correlation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    args.out.write_text(json.dumps({**header(command), "note": args.note, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
