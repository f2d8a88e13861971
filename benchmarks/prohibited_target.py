"""The prohibited categories' recall target and threshold placement, judged by the whole reviewer, without retraining.

Usage, after a default-size `make demo` (or any workspace whose prohibited candidate and reviewer stage have run):

    .venv/bin/python benchmarks/prohibited_target.py /tmp/demo --targets 0.97 0.93 0.90

For every target and both placements of the threshold (``lowest``: the score of the lowest validation positive the
target needs, :func:`pipelines.train.evaluate.threshold_for_recall`; ``middle``: halfway in logit space to the
highest validation negative under it, :func:`pipelines.train.evaluate.gap_middle`), the workspace's prohibited
candidate is calibrated on its validation probabilities (``recall_targets.confidence`` from its params.yaml) and
measured on the frozen test split: each category's recall, and the share of photos with no prohibited item that any
category flags. The whole reviewer is then re-decided from the reviewer stage's recorded scores
(``models/reviewer/scores.parquet``) with those prohibited thresholds and every other check as it was
(:func:`pipelines.release.operating_point.flags`, the vectorised decision the operating-point report checks against
``decide()``): clean auto-pass and the lowest prohibited photo recall per split. Writes
benchmarks/results/prohibited_target.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header

RESULTS = Path(__file__).parent / "results"


def reviewer_figures(frame: pd.DataFrame, metas: dict, floors: dict, thresholds: dict[str, float | None]) -> dict:
    """Per split: clean auto-pass, the lowest photo recall of any defect and of any prohibited category, and each
    category's clean flag rate, with
    ``thresholds`` ({check name: threshold}) replacing the recorded ones."""
    from pipelines.release import operating_point as op

    out = {}
    for split in ("val", "test", "live_mix"):
        part = frame[frame["split"] == split].reset_index(drop=True)
        if part.empty:
            continue
        manual, flagged = op.redecide(part, metas, floors, thresholds)
        clean = part["truth.clean"].to_numpy(bool)
        recall = {d: round(r, 4) for d, r in op.photo_recall(part, manual, overall=False).items()}
        prohibited = [v for d, v in recall.items() if d.startswith("prohibited:")]
        lowest = min(recall, key=recall.get)
        out[split] = {"clean_auto_pass": round(float((~manual[clean]).mean()), 4),
                      "lowest_photo_recall": [lowest, recall[lowest]],
                      "lowest_prohibited_photo_recall": min(prohibited) if prohibited else None,
                      "clean_flagged_by": {k: round(float(v[clean].mean()), 4) for k, v in flagged.items()
                                           if k.startswith("prohibited:") and v[clean].any()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.97, 0.93, 0.90])
    ap.add_argument("--out", type=Path, default=RESULTS / "prohibited_target.json")
    args = ap.parse_args()

    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.serve.bundle import read_meta
    from pipelines.train.evaluate import calibrate
    from pipelines.train.families import common, prohibited as family

    root = args.workspace.resolve()
    params = load_params(root / "params.yaml")
    df = common.load_frame(root)
    val, test = split_frame(df, "val"), split_frame(df, "test")
    model = family.load_combined(root, params)
    p_val, p_test = (family.probabilities(root, params, part, model) for part in (val, test))
    no_item = np.array([len(p) == 0 for p in test["prohibited"]])
    scores = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    bundles = root / "models" / "reviewer" / "bundles"
    metas = {p.name: read_meta(p) for p in sorted(bundles.iterdir()) if p.is_dir()}
    floors = dict(params.gate.recall_floors)
    rows = []
    for target in args.targets:
        for middle in (False, True):
            thr = {c: calibrate(p_val[:, j], family._labels(val, c).astype(bool), target,
                                params.recall_targets.confidence, middle=middle)[0]
                   for j, c in enumerate(model.categories)}
            recall = {c: round(float((p_test[family._labels(test, c).astype(bool), j] >= thr[c]).mean()), 4)
                      for j, c in enumerate(model.categories)}
            any_flag = np.stack([p_test[no_item, j] >= thr[c] for j, c in enumerate(model.categories)], 1).any(1)
            worst = min(recall, key=recall.get)
            rows.append({"target": target, "placement": "middle" if middle else "lowest",
                         "thresholds": {c: round(float(v), 6) for c, v in thr.items()},
                         "test_recall": recall, "lowest_test_recall": [worst, recall[worst]],
                         "test_no_item_flagged": round(float(any_flag.mean()), 4),
                         "reviewer": reviewer_figures(scores, metas, floors,
                                                      {f"prohibited:{c}": v for c, v in thr.items()})})
            r = rows[-1]
            print(f"target {target} {r['placement']}: lowest test recall {worst} {recall[worst]:.3f}, no-item photos "
                  f"flagged {r['test_no_item_flagged']:.3f}, clean auto-pass test "
                  f"{r['reviewer']['test']['clean_auto_pass']:.3f} live {r['reviewer']['live_mix']['clean_auto_pass']:.3f}, lowest "
                  f"test photo recall {r['reviewer']['test']['lowest_photo_recall']}",
                  flush=True)
    doc = {**header(f"python benchmarks/prohibited_target.py <demo workspace> --targets {' '.join(map(str, args.targets))}"),
           "workspace_train": {"prohibited": dict(params.train.prohibited)}, "confidence": params.recall_targets.confidence,
           "note": "one trained candidate (seed %d): thresholds re-chosen, nothing retrained; the reviewer re-decided "
                   "from its recorded scores" % params.seed,
           "rows": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
