"""Where a check's threshold lands when thousands of generated positives join validation's, without retraining.

Usage, after a default-size `make demo` (any workspace with trained manipulation and detector candidates and the
reviewer stage run):

    .venv/bin/python benchmarks/extra_calibration.py /tmp/demo --n 2000 [--targets 0.90 0.93 0.95] \
        --out benchmarks/results/extra_calibration.json

For manipulation, sticker_missing and dirt: ``n`` generated photos with that defect drawn on every one (the
photos ``recall_targets.extra_positives`` renders for the check, same seed and salt, at ``n`` of them), scored by
the trained candidate. At the workspace's recall target (and each of ``--targets``) the threshold is chosen as
evaluation chooses it (:func:`pipelines.train.evaluate.calibrate`, the workspace's confidence) on validation's
positives alone and on validation's with the generated ones; for each: the recall on validation, on the generated
positives and on the frozen test split, and the share of the test split's negatives (photos the check applies to,
without the defect) it flags. Where the reviewer stage has run, also the whole reviewer's clean auto-pass and the
defect's photo recall per split at that threshold, every other check as the stage recorded it
(:func:`pipelines.release.operating_point.curve` over ``models/reviewer/scores.parquet``).
With ``--with-items`` manipulation is also calibrated on edits drawn beside prohibited items as the versioned photos
are (``calibration_edits(prohibited=True)``), and every manipulation row splits the test split's recall into edits
beside a prohibited item and away from one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from results_header import header

RESULTS = Path(__file__).parent / "results"
CHECKS = ("manipulation", "sticker_missing", "dirt")


def _scored(root: Path, params, check: str, frame):
    """(scores, labels) of ``frame``'s rows the check applies to."""
    from pipelines.train.families import detector, manipulation, scalar

    if check == "manipulation":
        return scalar.scores("manipulation", root, params, frame), manipulation._labels(frame).astype(bool)
    applies, label = detector.CHECKS[check]
    rows = frame[applies(frame).to_numpy()]
    return detector.defect_scores(root, params, rows)[f"{check}_score"].to_numpy(), rows[label].to_numpy(bool)


def _extra(root: Path, params, check: str, n: int, prohibited: bool = False):
    """The generated positives evaluation calibrates the check on, ``n`` of them (``prohibited``: manipulation's
    drawing prohibited items as the versioned photos do)."""
    from pipelines.train.families import detector, manipulation

    targets = params.recall_targets.model_copy(
        update={"extra_positives": {**params.recall_targets.extra_positives, check: n}})
    params = params.model_copy(update={"recall_targets": targets})
    if check == "manipulation":
        return manipulation.calibration_edits(root, params, prohibited=prohibited)
    return detector.calibration_positives(root, params, check)


def _reviewer(root: Path, params):
    """check -> (threshold -> {split: clean auto-pass, photo recall}) from the reviewer stage's recorded scores."""
    import pandas as pd
    from pipelines.release import operating_point as op
    from pipelines.release.policy import _scored_metas

    path = root / "models" / "reviewer" / "scores.parquet"
    if not path.exists():
        return None
    frame, metas = pd.read_parquet(path), _scored_metas(root)
    found = {c.name: c for c in op.checks(frame, metas, params.gate.recall_floors)}

    def at(check: str, threshold: float) -> dict:
        out = {}
        for split in ("val", "test", "live_mix"):
            row = op.curve(found[check], frame[frame["split"] == split], metas, [threshold]).iloc[0]
            out[split] = {"clean_auto_pass": round(float(row["clean_auto_pass"]), 4),
                          "photo_recall": round(float(row["photo_recall"]), 4)}
        return out
    return at


def measure(root: Path, n: int, checks: list[str], targets: list[float], with_items: bool = False) -> dict:
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.train.evaluate import calibrate
    from pipelines.train.families import common

    params = load_params(root / "params.yaml")
    df = common.load_frame(root)
    frames = {s: split_frame(df, s) for s in ("val", "test")}
    reviewer = _reviewer(root, params)
    out = {}
    for check in checks:
        s_val, y_val = _scored(root, params, check, frames["val"])
        s_test, y_test = _scored(root, params, check, frames["test"])
        s_extra, y_extra = _scored(root, params, check, _extra(root, params, check, n))
        s_extra = s_extra[y_extra]
        extras = {"validation_and_extra": s_extra}
        # manipulation's edits, also drawn beside prohibited items (as the versioned photos are); the test split's
        # recall beside an item and away from one
        beside = None
        if check == "manipulation" and with_items:
            s_items, y_items = _scored(root, params, check, _extra(root, params, check, n, prohibited=True))
            extras["validation_and_extra_with_items"] = s_items[y_items]
            beside = frames["test"]["prohibited"].map(len).gt(0).to_numpy()
        target, confidence = getattr(params.recall_targets, check), params.recall_targets.confidence
        rows = {"recall_target": target, "confidence": confidence, "val_positives": int(y_val.sum()),
                "extra_positives": {k: int(len(v)) for k, v in extras.items()}, "test_positives": int(y_test.sum())}
        if beside is not None:
            rows["test_positives_beside_an_item"] = int((y_test & beside).sum())
        for t_name, goal in [("", target)] + [(f"target {t}: ", t) for t in targets if t != target]:
            choices = {"validation": (calibrate(s_val, y_val, goal, confidence)[0], s_extra)}
            for name, s_more in extras.items():
                choices[name] = (calibrate(np.concatenate([s_val, s_more]),
                                           np.concatenate([y_val, np.ones(len(s_more), bool)]), goal, confidence)[0],
                                 s_more)
            for name, (t, s_more) in choices.items():
                row = {"threshold": round(float(t), 6),
                       "val_recall": round(float((s_val[y_val] >= t).mean()), 4),
                       "extra_recall": round(float((s_more >= t).mean()), 4),
                       "test_recall": round(float((s_test[y_test] >= t).mean()), 4),
                       "test_negatives_flagged": round(float((s_test[~y_test] >= t).mean()), 4)}
                if beside is not None:
                    row["test_recall_beside_an_item"] = round(float((s_test[y_test & beside] >= t).mean()), 4)
                    row["test_recall_away_from_items"] = round(float((s_test[y_test & ~beside] >= t).mean()), 4)
                if reviewer is not None:
                    row["reviewer"] = reviewer(check, float(t))
                rows[t_name + name] = row
                print(check, t_name + name, json.dumps(row), flush=True)
        out[check] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--n", type=int, default=2000, help="generated photos per check")
    ap.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--targets", nargs="*", type=float, default=[], help="recall targets tried besides the workspace's")
    ap.add_argument("--with-items", action="store_true",
                    help="manipulation: also calibrate on edits drawn beside prohibited items")
    ap.add_argument("--label", default=None, help="what the workspace is (stored with the figures)")
    ap.add_argument("--out", type=Path, default=RESULTS / "extra_calibration.json")
    args = ap.parse_args()
    figures = measure(args.workspace.resolve(), args.n, args.checks, args.targets, args.with_items)
    record = {**header(f"python benchmarks/extra_calibration.py <workspace> --n {args.n} --checks {' '.join(args.checks)}"
                        + (f" --targets {' '.join(map(str, args.targets))}" if args.targets else "")
                        + (" --with-items" if args.with_items else "")),
              "workspace": args.label, "checks": figures}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
