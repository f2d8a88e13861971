"""Where the dirt check's errors are: the workspace's trained defects net scored on the validation and test
photos that show a product, sliced by what the generator recorded of each photo.

Usage, after a default-size `dvc repro` (or `make demo`) in a workspace:

    .venv/bin/python benchmarks/dirt_errors.py <workspace>

The threshold catches 95% of the validation positives (point estimate: the slices are compared, nothing is
deployed). For the clean product photos: the share flagged per category, backdrop and blur score; for the dirty
ones: the share caught per spot area, contrast, blur score, category and number of visible spots; the AUC on
sharp and on blurred photos; and the net's validation score per epoch from its training record. Writes
benchmarks/results/dirt_errors.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header

RESULTS = Path(__file__).parent / "results"
NEG_SLICES = (("category", None), ("background", None), ("blur_score", [-.01, .17, .34, .5, 1.01]))
POS_SLICES = (("dirt_max_area_px", [0, 15, 30, 60, 120, 2000]), ("dirt_max_contrast", [0, .1, .2, .3, .45, 1]),
              ("blur_score", [-.01, .17, .34, .5, 1.01]), ("category", None), ("dirt_spots_visible", None))


def sliced(frame: pd.DataFrame, col: str, bins) -> dict:
    """{slice: [photos, share flagged]}."""
    groups = frame.groupby(pd.cut(frame[col], bins) if bins else frame[col], observed=True)
    return {str(k): [int(len(g)), round(float(g["flag"].mean()), 3)] for k, g in groups}


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from pipelines.params import load_params
    from pipelines.train.families import common, detector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--out", type=Path, default=RESULTS / "dirt_errors.json")
    args = ap.parse_args()
    ws = args.workspace.resolve()
    os.chdir(ws)                                   # the feature cache resolves in the workspace, as in dvc repro
    params = load_params(ws / "params.yaml")
    df = common.load_frame(ws)
    f = df[df["split"].isin(["val", "test"]) & (df["category"] != "none")].copy()
    f["dirt_score"] = detector.defect_scores(ws, params, f)["dirt_score"].to_numpy()
    y = f["dirt"].astype(bool)
    val_pos = np.sort(f.loc[(f["split"] == "val") & y, "dirt_score"].to_numpy())
    threshold = float(val_pos[int(np.floor(0.05 * len(val_pos)))])
    f["flag"] = f["dirt_score"] >= threshold
    sharp = f["blur_score"] < 0.34
    record = json.loads((ws / "models" / "detector" / "train.json").read_text())["defects"]
    doc = {**header("python benchmarks/dirt_errors.py <demo workspace>"),
           "seed": params.seed, "train_defects": dict(params.train.defects),
           "net_training": {"epochs_run": record["epochs_run"], "best_epoch": record["best_epoch"],
                            "fit_seconds": record["fit_seconds"],
                            "val_score_per_epoch (mean AP, sticker and dirt)":
                                [round(h["val_score"], 4) for h in record["history"]]},
           "threshold_catching_0.95_of_val_positives": round(threshold, 5),
           "auc": {s: round(float(roc_auc_score(y[f["split"] == s], f.loc[f["split"] == s, "dirt_score"])), 4)
                   for s in ("val", "test")},
           "auc_sharp_photos": round(float(roc_auc_score(y[sharp], f.loc[sharp, "dirt_score"])), 4),
           "auc_blurred_photos": round(float(roc_auc_score(y[~sharp], f.loc[~sharp, "dirt_score"])), 4),
           "clean_product_photos_flagged": [int((~y).sum()), round(float(f.loc[~y, "flag"].mean()), 4)],
           "clean_flagged_by": {col: sliced(f[~y], col, bins) for col, bins in NEG_SLICES},
           "dirty_caught_by": {col: sliced(f[y], col, bins) for col, bins in POS_SLICES}}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
