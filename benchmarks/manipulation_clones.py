"""What sets the manipulation threshold, and what real photos score: one row per trained workspace.

Usage, in workspaces whose manipulation candidate is trained and evaluated (``reviewops train manipulation``,
``reviewops evaluate manipulation``):

    .venv/bin/python benchmarks/manipulation_clones.py WS[=LABEL] ... --out benchmarks/results/manipulation_clones.json

For each: the threshold of metrics/manipulation.json; the threshold that brings validation's generated edits to
``recall_targets.manipulation`` with and without the copy-moves (clones), and the share of clean validation photos
each flags; the net's scores on fresh crops of real_photos.train (another seed than training's, half edited) and
on the real-photo check (unedited views and their edits, :mod:`pipelines.release.real_photos`, JPEG q92), and the
check's false alarms and edit recall at each threshold. Scored with the PyTorch net on the CPU (the figures of
metrics/real_photos.json come from the exported bundles through the service's path; they agree within rounding).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def top_threshold(scores: np.ndarray, recall: float) -> float:
    """The highest threshold at which ``recall`` of ``scores`` (positives) are at or above it."""
    s = np.sort(scores)[::-1]
    return float(s[int(np.ceil(recall * len(s))) - 1])


def measure(ws: Path) -> dict:
    from pipelines.data import real_photos as rp
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.release import real_photos as check
    from pipelines.train.families import common, scalar
    from pipelines.train.features import array_features

    params = load_params(ws / "params.yaml")
    net, arch = scalar.load_net("manipulation", ws)

    def score(images) -> np.ndarray:
        x = array_features(net.trunk, images, arch["image_size"], ws, "cpu")
        with torch.no_grad():
            return torch.sigmoid(net.from_features(x.float().contiguous(memory_format=torch.channels_last))).numpy()

    val = split_frame(common.load_frame(ws), "val")
    s_val = scalar.scores("manipulation", ws, params, val)
    kind = val["manipulation_type"].to_numpy()
    edited = val["manipulated"].to_numpy(bool)
    target = params.recall_targets.manipulation
    thresholds = {"calibrated": json.loads((ws / "metrics/manipulation.json").read_text())["thresholds"]["manipulation"],
                  "all_edits_at_target": top_threshold(s_val[edited], target),
                  "without_clones_at_target": top_threshold(s_val[edited & (kind != "clone")], target)}
    fresh = rp.manipulation_samples(params.real_photos.train, 400, arch["image_size"], 12345, params.labels.visibility)
    s_fresh, y_fresh = score(fresh.images), fresh.targets.astype(bool)
    views = check.views(params)
    edits = check.edited(params, views)
    s_un = score([rp.jpeg(v, 92) for *_, v in views])
    s_ed = score([rp.jpeg(v, 92) for *_, v in edits])
    q = lambda a: [round(float(v), 4) for v in np.quantile(a, [0.1, 0.5, 0.9])]
    return {
        "validation_median_by_type": {k: round(float(np.median(s_val[kind == k])), 4) for k in sorted(set(kind))},
        "at": {name: {"threshold": round(t, 6),
                      "generated_clean_flagged": round(float((s_val[~edited] >= t).mean()), 4),
                      "generated_clone_recall": round(float((s_val[kind == "clone"] >= t).mean()), 4),
                      "real_train_photos_fresh_crops_authentic_flagged": round(float((s_fresh[~y_fresh] >= t).mean()), 4),
                      "real_check_unedited_flagged": round(float((s_un >= t).mean()), 4),
                      "real_check_edits_caught": round(float((s_ed >= t).mean()), 4)}
               for name, t in thresholds.items()},
        "real_train_photos_fresh_crops": {"authentic_q10_50_90": q(s_fresh[~y_fresh]), "edited_q10_50_90": q(s_fresh[y_fresh]),
                                          "auc": round(float(roc_auc_score(y_fresh, s_fresh)), 4)},
        "real_check": {"unedited_q10_50_90": q(s_un), "edited_q10_50_90": q(s_ed),
                       "auc": round(float(roc_auc_score(np.r_[np.zeros(len(s_un)), np.ones(len(s_ed))], np.r_[s_un, s_ed])), 4),
                       "unedited": len(s_un), "edits": len(s_ed),
                       "median_unedited_by_photo": {r: round(float(np.median([s for (p, _, _), s in zip(views, s_un) if p == r])), 4)
                                                    for r in params.real_photos.checks}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", nargs="+", help="WS or WS=LABEL")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    rows = {}
    for item in args.workspaces:
        path, _, label = item.partition("=")
        rows[label or Path(path).name] = measure(Path(path).resolve())
        print(label or path, json.dumps(rows[label or Path(path).name]["at"], indent=1), flush=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/manipulation_clones.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "note": args.note, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
