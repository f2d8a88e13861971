"""Can a pixel-level copy-move detector tell the generated clones from clean photos? Two classic ones, measured.

Usage, in a workspace with versioned data (any demo workspace):

    .venv/bin/python benchmarks/copy_move_pixels.py WS --out benchmarks/results/copy_move_pixels.json

A clone (``pipelines.data.synth.manipulation.clone``) copies a square of 38-77 px of the final photo, sensor noise
included, to another place of the same photo, same orientation and scale. Two detectors look for that copy:

- **Autocorrelation of the noise residual**: the grey photo minus a 3 x 3 smoothing of it (or its median, or its
  Laplacian), optionally clipped at ``clip`` robust standard deviations and restricted to pixels away from strong
  edges; its autocorrelation by FFT (zero-padded, normalised by the zero-shift energy). A copy-move adds a peak at
  its shift. The score: the highest value at shifts of at least ``min_shift`` px; with ``ring``, a value minus the
  largest value on the ring ``ring`` px around it (a sharp peak, not a ridge along a straight edge).
- **Block matching** (Fridrich et al.'s method): 12 x 12 blocks every 2 px with enough texture, each block's 8
  nearest blocks in pixel space; the score is the size of the largest group of matched pairs that share one
  shift (a copy moves many blocks by the same vector).

For every validation photo with an edit drawn and 300 clean ones (seed 0), per variant: the ROC AUC of the score
of each labelled edit kind against the clean photos (0.5: no separation), quantiles of the clean and clone
scores, and the milliseconds per photo. Block matching also runs on the real-photo check's unedited photos and
its edits (``pipelines.release.real_photos``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from results_header import header

KINDS = ("clone", "splice", "synthetic", "watermark")
AUTOCORRELATION = {
    "box3": {},
    "box3_clip2.5": {"clip": 2.5},
    "median_clip2": {"residual": "median", "clip": 2.0},
    "laplacian_clip2": {"residual": "laplacian", "clip": 2.0},
    "box3_edges_masked": {"edges": 1.0},
    "box3_edges_masked_clip2.5": {"edges": 1.0, "clip": 2.5},
    "box3_ring2": {"ring": 2, "min_shift": 8},
    "box3_ring3": {"ring": 3, "min_shift": 8},
    "box3_ring2_clip2.5": {"ring": 2, "min_shift": 8, "clip": 2.5},
    "box3_ring2_edges_masked": {"ring": 2, "min_shift": 8, "edges": 1.0},
}


def autocorrelation_score(grey: np.ndarray, residual: str = "box3", clip: float = 0.0, edges: float = 0.0,
                          ring: int = 0, min_shift: int = 12) -> float:
    if residual == "median":
        r = grey - cv2.medianBlur(grey.astype(np.uint8), 3).astype(np.float32)
    elif residual == "laplacian":
        r = cv2.Laplacian(grey, cv2.CV_32F)
    else:
        r = grey - cv2.blur(grey, (3, 3))
    if edges:
        gradient = cv2.dilate(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)),
                              np.ones((5, 5), np.uint8))
        r = r * (gradient < edges * 3 * np.median(gradient))
    if clip:
        s = 1.4826 * np.median(np.abs(r)) + 1e-3
        r = np.clip(r, -clip * s, clip * s)
    r = r - r.mean()
    n = grey.shape[0]
    f = np.fft.rfft2(r, s=(2 * n, 2 * n))
    ac = np.fft.fftshift(np.fft.irfft2(f * np.conj(f), s=(2 * n, 2 * n)))
    ac /= ac[n, n] + 1e-9
    if ring:
        kernel = np.pad(np.zeros((2 * ring - 1, 2 * ring - 1), np.uint8), 1, constant_values=1)
        ac = ac - cv2.dilate(ac.astype(np.float32), kernel)
    ac[n - min_shift:n + min_shift + 1, n - min_shift:n + min_shift + 1] = 0
    return float(ac.max())


def block_matching_score(grey: np.ndarray, block: int = 12, step: int = 2, min_shift: int = 16,
                         eps: float = 2.0, min_std: float = 6.0) -> int:
    from sklearn.neighbors import NearestNeighbors

    n = (grey.shape[0] - block) // step + 1
    ys = np.arange(n) * step
    feats = np.stack([grey[ys[:, None] + i, ys[None, :] + j] for i in range(0, block, 2) for j in range(0, block, 2)],
                     -1).reshape(-1, (block // 2) ** 2)
    pos = np.stack(np.meshgrid(ys, ys, indexing="ij"), -1).reshape(-1, 2)
    keep = feats.std(1) >= min_std
    f, pos = feats[keep], pos[keep]
    if len(f) < 10:
        return 0
    dist, idx = NearestNeighbors(n_neighbors=min(8, len(f))).fit(f).kneighbors(f)
    shifts = []
    for k in range(1, dist.shape[1]):
        d = pos[idx[:, k]] - pos
        d = d[(dist[:, k] < eps * np.sqrt(f.shape[1])) & (np.abs(d).max(1) >= min_shift)]
        shifts.append(np.where((d[:, 0] < 0) | ((d[:, 0] == 0) & (d[:, 1] < 0)), -1, 1)[:, None] * d)
    s = np.concatenate(shifts)
    if not len(s):
        return 0
    return int(np.unique((s[:, 0] // 2 + 200) * 1000 + (s[:, 1] // 2 + 200), return_counts=True)[1].max())


def grey_of(rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return g if g.shape[0] == 256 else cv2.resize(g, (256, 256), interpolation=cv2.INTER_AREA)


def separation(scores: np.ndarray, kinds: np.ndarray) -> dict:
    clean = scores[kinds == "none"]
    out = {"auc_vs_clean": {}}
    for kind in KINDS:
        edited = scores[kinds == kind]
        if len(edited) and len(clean):
            y = np.r_[np.zeros(len(clean)), np.ones(len(edited))]
            out["auc_vs_clean"][kind] = round(float(roc_auc_score(y, np.r_[clean, edited])), 3)
    out["clean_quantiles_50_95_99"] = [round(float(q), 4) for q in np.quantile(clean, [0.5, 0.95, 0.99])]
    clones = scores[kinds == "clone"]
    if len(clones):
        out["clone_quantiles_5_10_50"] = [round(float(q), 4) for q in np.quantile(clones, [0.05, 0.1, 0.5])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--clean", type=int, default=300)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import pandas as pd

    from pipelines.data import real_photos as rp
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.release import real_photos as rel
    from pipelines.train.families import common

    params = load_params(args.workspace / "params.yaml")
    val = split_frame(common.load_frame(args.workspace), "val")
    edited = val[val["manipulation_type"] != "none"]
    clean = val[val["manipulation_drawn"] == "none"].sample(min(args.clean, int((val["manipulation_drawn"] == "none").sum())),
                                                            random_state=0)
    photos = pd.concat([edited, clean])
    kinds = np.where(photos["manipulation_drawn"].eq("none").to_numpy(), "none", photos["manipulation_type"].to_numpy())
    greys = [grey_of(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)) for p in photos["path"]]

    out = {**header("python benchmarks/copy_move_pixels.py " + shlex.join(sys.argv[1:])),
           "workspace": str(args.workspace), "photos": {k: int((kinds == k).sum()) for k in ("none", *KINDS)},
           "autocorrelation": {}, "block_matching": {}}
    for name, cfg in AUTOCORRELATION.items():
        start = time.perf_counter()
        scores = np.array([autocorrelation_score(g, **cfg) for g in greys])
        out["autocorrelation"][name] = {"settings": cfg, **separation(scores, kinds),
                                        "ms_per_photo": round((time.perf_counter() - start) / len(greys) * 1000, 1)}
        print(name, out["autocorrelation"][name]["auc_vs_clean"], flush=True)

    start = time.perf_counter()
    scores = np.array([block_matching_score(g) for g in greys], dtype=float)
    bm = {**separation(scores, kinds), "ms_per_photo": round((time.perf_counter() - start) / len(greys) * 1000, 1)}
    base = rel.views(params)
    real = {"unedited": [block_matching_score(grey_of(rp.jpeg(v, 92))) for *_, v in base]}
    for _, _, kind, v in rel.edited(params, base):
        real.setdefault(kind, []).append(block_matching_score(grey_of(rp.jpeg(v, 92))))
    bm["share_at_or_above"] = {str(t): {**{k: round(float(np.mean(scores[kinds == k] >= t)), 3) for k in ("none", *KINDS)},
                                        **{f"real_{k}": round(float(np.mean(np.array(v) >= t)), 3) for k, v in real.items()}}
                               for t in (5, 10, 20, 40, 80)}
    out["block_matching"] = bm
    print("block matching", bm["auc_vs_clean"], flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
