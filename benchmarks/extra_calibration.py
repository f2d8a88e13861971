"""Where a check's threshold lands when thousands of generated positives join validation's, without retraining.

Usage, after a default-size `make demo` (any workspace with trained manipulation and detector candidates):

    .venv/bin/python benchmarks/extra_calibration.py /tmp/demo --n 2000 --out benchmarks/results/extra_calibration.json

For manipulation, sticker_missing and dirt: ``n`` generated photos with that defect drawn on every one (the
generator's rates overridden to 1, rendered once under the workspace's ``.reviewops/enriched``; manipulation's are
the photos ``recall_targets.manipulation_extra_edits`` renders, same seed and salt), scored by the trained
candidate. The threshold is chosen as evaluation chooses it (:func:`pipelines.train.evaluate.calibrate`, the
workspace's recall target and confidence) on validation's positives alone and on validation's with the generated
ones; for each, the recall on validation, on the generated positives and on the frozen test split, and the share
of the test split's negatives (photos the check applies to, without the defect) it flags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from results_header import header

RESULTS = Path(__file__).parent / "results"
RATES = {"manipulation": "manipulation_rate", "sticker_missing": "sticker_missing_rate", "dirt": "dirt_rate"}
DETECTOR_SALT = 59


def _scored(root: Path, params, check: str, frame):
    """(scores, labels) of ``frame``'s rows the check applies to."""
    from pipelines.train.families import detector, manipulation, scalar

    if check == "manipulation":
        return scalar.scores("manipulation", root, params, frame), manipulation._labels(frame).astype(bool)
    applies, label = detector.CHECKS[check]
    rows = frame[applies(frame).to_numpy()]
    return detector.defect_scores(root, params, rows)[f"{check}_score"].to_numpy(), rows[label].to_numpy(bool)


def _extra(root: Path, params, check: str, n: int):
    from pipelines.data.generate import enriched_photos
    from pipelines.train.families import manipulation

    if check == "manipulation":           # the very photos evaluation renders, at ``n`` of them
        targets = params.recall_targets.model_copy(update={"manipulation_extra_edits": n})
        return manipulation.calibration_edits(root, params.model_copy(update={"recall_targets": targets}))
    return enriched_photos(root, params, f"{check}-calibration", n, {RATES[check]: 1.0}, salt=DETECTOR_SALT)


def measure(root: Path, n: int, checks: list[str]) -> dict:
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.train.evaluate import calibrate
    from pipelines.train.families import common

    params = load_params(root / "params.yaml")
    df = common.load_frame(root)
    frames = {s: split_frame(df, s) for s in ("val", "test")}
    out = {}
    for check in checks:
        s_val, y_val = _scored(root, params, check, frames["val"])
        s_test, y_test = _scored(root, params, check, frames["test"])
        s_extra, y_extra = _scored(root, params, check, _extra(root, params, check, n))
        s_extra = s_extra[y_extra]
        target, confidence = getattr(params.recall_targets, check), params.recall_targets.confidence
        rows = {"recall_target": target, "confidence": confidence, "val_positives": int(y_val.sum()),
                "extra_positives": int(len(s_extra)), "test_positives": int(y_test.sum())}
        choices = {"validation": calibrate(s_val, y_val, target, confidence)[0],
                   "validation_and_extra": calibrate(np.concatenate([s_val, s_extra]),
                                                     np.concatenate([y_val, np.ones(len(s_extra), bool)]),
                                                     target, confidence)[0]}
        for name, t in choices.items():
            rows[name] = {"threshold": round(float(t), 6),
                          "val_recall": round(float((s_val[y_val] >= t).mean()), 4),
                          "extra_recall": round(float((s_extra >= t).mean()), 4),
                          "test_recall": round(float((s_test[y_test] >= t).mean()), 4),
                          "test_negatives_flagged": round(float((s_test[~y_test] >= t).mean()), 4)}
        out[check] = rows
        print(check, json.dumps(rows), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--n", type=int, default=2000, help="generated photos per check")
    ap.add_argument("--checks", nargs="+", default=list(RATES), choices=list(RATES))
    ap.add_argument("--label", default=None, help="what the workspace is (stored with the figures)")
    ap.add_argument("--out", type=Path, default=RESULTS / "extra_calibration.json")
    args = ap.parse_args()
    figures = measure(args.workspace.resolve(), args.n, args.checks)
    record = {**header(f"python benchmarks/extra_calibration.py <workspace> --n {args.n}"),
              "workspace": args.label, "checks": figures}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
