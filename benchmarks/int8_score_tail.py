"""The INT8 reviewer with its score tails quantized (as served up to 96534bf) against FP32 score tails.

Usage, after a default-size `make demo` (its workspace holds the trained candidates and metrics/reviewer.json,
made by the reviewer stage):

    .venv/bin/python benchmarks/int8_score_tail.py /tmp/demo [--scratch /tmp/int8_score_tail]

The workspace's metrics/reviewer.json and models/reviewer/scores.parquet are the "before" row: the reviewer
stage of the code that made them. In a scratch project that links the workspace's data, feature cache, gallery
and trained candidates, the reviewer stage runs again with this checkout (:func:`pipelines.release.reviewer.
evaluate_reviewer`: INT8 chosen again, every split reviewed): the "after" row. Per check it records how many
distinct values the served score takes, the family's threshold (calibrated on FP32 validation scores) and the
validation recall the served scores reach at it against the recall the threshold was calibrated for; per split
the whole reviewer's clean auto-pass and lowest photo recall, FP32 and as served; each graph's time at batch 1,
FP32 and INT8 (as the reviewer stage measured it).
Writes benchmarks/results/int8_score_tail.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from family_variants import LINKED
from results_header import header

RESULTS = Path(__file__).parent / "results"
CHECKS = {  # served score column -> (family metrics file, threshold key, truth column)
    "sticker_missing_score": ("detector", "sticker_missing", "truth.sticker_missing"),
    "dirt_score": ("detector", "dirt", "truth.dirt"),
    "manipulation_score": ("manipulation", "manipulation", "truth.manipulation"),
    "blur_score": ("blur", "blur", "truth.blur"),
    **{f"prohibited_score.{c}": ("prohibited", c, f"truth.prohibited:{c}")
       for c in ("cash", "knife", "gun", "cigarettes", "lighter", "pills", "syringe", "ammunition", "alcohol",
                 "handcuffs")},
}


def scratch_project(workspace: Path, scratch: Path) -> None:
    from pipelines.train import families

    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "models").mkdir(parents=True)
    (scratch / "metrics").mkdir()
    for link in LINKED:
        os.symlink(workspace / link, scratch / link)
    for family in families.FAMILIES:
        os.symlink(workspace / "models" / family, scratch / "models" / family)
        shutil.copy(workspace / "metrics" / f"{family}.json", scratch / "metrics" / f"{family}.json")
    shutil.copy(workspace / "params.yaml", scratch / "params.yaml")


def served_checks(scores: pd.DataFrame, root: Path) -> dict:
    """Per check: distinct served values on validation, the threshold, the recall it reaches on validation."""
    val = scores[scores["split"] == "val"]
    out = {}
    for column, (family, key, truth) in CHECKS.items():
        metrics = json.loads((root / "metrics" / f"{family}.json").read_text())
        thr = (metrics.get("thresholds") or {}).get(key)
        s, y = val[column].to_numpy(float), val[truth].to_numpy(bool)
        ok = ~np.isnan(s)
        s, y = s[ok], y[ok]
        out[column] = {"distinct_values_val": int(len(np.unique(s))), "threshold": thr,
                       "smallest_positive_value": float(s[s > 0].min()) if (s > 0).any() else None,
                       "val_positives": int(y.sum()),
                       "val_recall_served": None if thr is None or not y.any() else round(float((s[y] >= thr).mean()), 4),
                       "val_clean_flagged_served": None if thr is None else
                       round(float((s[val["truth.clean"].to_numpy(bool)[ok]] >= thr).mean()), 4)}
    return out


def reviewer_row(metrics: dict, scores: pd.DataFrame, root: Path) -> dict:
    from pipelines.release.reviewer import lowest_photo_recall

    int8 = metrics.get("int8") or {}
    return {"int8_served": int8.get("served"),
            "fp32_test_clean_auto_pass": (int8.get("fp32_test") or {}).get("clean_auto_pass"),
            "served": {split: {"clean_auto_pass": metrics[split]["clean_auto_pass"],
                               "lowest_photo_recall": lowest_photo_recall(metrics[split]),
                               "photo_recall": metrics[split]["photo_recall"]}
                       for split in ("val", "test", "live_mix") if split in metrics},
            "live_mix_auto_pass": metrics.get("live_mix_auto_pass"),
            "unit_ms_fp32_int8": {u: [r["fp32_ms"], r["int8_ms"]] for u, r in (int8.get("units") or {}).items()},
            "checks": served_checks(scores, root)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/int8_score_tail"))
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_score_tail.json")
    args = ap.parse_args()
    out = args.out.resolve()
    workspace, scratch = args.workspace.resolve(), args.scratch.resolve()
    from pipelines.params import load_params
    from pipelines.release.reviewer import evaluate_reviewer

    before = reviewer_row(json.loads((workspace / "metrics" / "reviewer.json").read_text()),
                          pd.read_parquet(workspace / "models" / "reviewer" / "scores.parquet"), workspace)
    scratch_project(workspace, scratch)
    os.chdir(scratch)
    after_metrics = evaluate_reviewer(scratch, load_params(scratch / "params.yaml"), progress=True)
    after = reviewer_row(after_metrics, pd.read_parquet(scratch / "models" / "reviewer" / "scores.parquet"), scratch)
    out.write_text(json.dumps({
        **header("python benchmarks/int8_score_tail.py <demo workspace>"),
        "rows": {"score_tail_int8 (workspace's reviewer stage)": before, "score_tail_fp32 (this checkout)": after}},
        indent=1) + "\n")
    print(json.dumps({k: {"fp32": r["fp32_test_clean_auto_pass"],
                          "served": {s: v["clean_auto_pass"] for s, v in r["served"].items()},
                          "dirt": r["checks"]["dirt_score"]} for k, r in
                      (("before", before), ("after", after))}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
