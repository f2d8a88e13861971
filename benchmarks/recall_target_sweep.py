"""Each check's recall target, judged by the whole reviewer, without retraining.

Usage, after a default-size `make demo` (or any workspace whose reviewer stage has run):

    .venv/bin/python benchmarks/recall_target_sweep.py /tmp/demo --checks sticker_missing dirt blur manipulation \
        --targets 0.98 0.97 0.96 0.95 0.93

For every check and target, the check's threshold is chosen as calibration chooses it
(:func:`pipelines.train.evaluate.calibrate`, at the workspace's ``recall_targets.confidence``), on the validation
scores the reviewer stage recorded (``models/reviewer/scores.parquet``) over the photos the check can flag, with the
photos that show its defect as positives. The whole reviewer is then re-decided on every split with that threshold and
every other check as it was (:func:`pipelines.release.operating_point.redecide`): clean auto-pass, the share of the
defect's photos sent to a person (photo recall) and flagged by this check itself, the share of clean photos this check
flags, the lowest photo recall of any defect, and whether every defect's test photo recall keeps its gate floor. The
row ``target: "current"`` is the threshold the candidate was calibrated with (its family's own labels; the same
photos up to the visibility rule). Writes benchmarks/results/recall_target_sweep.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header

RESULTS = Path(__file__).parent / "results"
SPLITS = ("val", "test", "live_mix")


def figures(frame: pd.DataFrame, metas: dict, floors: dict, check, threshold: float | None) -> dict:
    """Per split, the reviewer re-decided with ``threshold`` for ``check``: clean auto-pass, the check's defect's
    photo and own recall, its clean flag rate, the lowest photo recall of any defect and the defects under floor."""
    from pipelines.release import operating_point as op

    out = {}
    for split in SPLITS:
        part = frame[frame["split"] == split].reset_index(drop=True)
        if part.empty:
            continue
        manual, own = op.redecide(part, metas, floors, {check.name: threshold})
        flagged, clean, pos = own[check.name], part["truth.clean"].to_numpy(bool), op.positives(check, part)
        recall = op.photo_recall(part, manual)
        lowest = min(recall, key=recall.get)
        below = op.below_floor(recall, floors)
        out[split] = {"clean_auto_pass": round(float((~manual[clean]).mean()), 4),
                      "photo_recall": round(float(manual[pos].mean()), 4) if pos.any() else None,
                      "check_recall": round(float(flagged[pos].mean()), 4) if pos.any() else None,
                      "positives": int(pos.sum()),
                      "clean_flagged_by_check": round(float(flagged[clean].mean()), 4),
                      "lowest_photo_recall": [lowest, round(recall[lowest], 4)],
                      "below_floor": below}
    return out


def sweep(frame: pd.DataFrame, metas: dict, floors: dict, names: list[str], targets: list[float],
          confidence: float) -> dict:
    """{check: [row per target, the current threshold first]}."""
    from pipelines.release import operating_point as op
    from pipelines.train.evaluate import calibrate

    found = {c.name: c for c in op.checks(frame, metas, floors)}
    missing = [n for n in names if n not in found or found[n].sku]
    if missing:
        raise SystemExit(f"not a swept score check of this workspace: {', '.join(missing)} "
                         f"(have: {', '.join(n for n, c in found.items() if not c.sku)})")
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    out = {}
    for name in names:
        check = found[name]
        eligible = op._eligible(check, val, metas)
        scores, labels = val.loc[eligible, check.score].to_numpy(float), op.positives(check, val)[eligible]
        rows = [{"target": "current", "threshold": check.threshold,
                 "reviewer": figures(frame, metas, floors, check, check.threshold)}]
        for target in targets:
            thr, _ = calibrate(scores, labels, target, confidence)
            rows.append({"target": target, "threshold": None if thr is None else float(thr),
                         "reviewer": figures(frame, metas, floors, check, thr)})
        for r in rows:
            t = r["reviewer"]["test"]
            print(f"{name} target {r['target']}: threshold {r['threshold']}, test photo recall {t['photo_recall']} "
                  f"(check alone {t['check_recall']}), clean flagged by it {t['clean_flagged_by_check']}, clean "
                  f"auto-pass test {t['clean_auto_pass']} live {r['reviewer']['live_mix']['clean_auto_pass']}, "
                  f"below floor {t['below_floor'] or 'none'}", flush=True)
        out[name] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--checks", nargs="+", default=["sticker_missing", "dirt", "blur", "manipulation"])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.98, 0.97, 0.96, 0.95, 0.93])
    ap.add_argument("--out", type=Path, default=RESULTS / "recall_target_sweep.json")
    args = ap.parse_args()

    from pipelines.params import load_params
    from pipelines.serve.bundle import read_meta

    root = args.workspace.resolve()
    params = load_params(root / "params.yaml")
    frame = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    bundles = root / "models" / "reviewer" / "bundles"
    metas = {p.name: read_meta(p) for p in sorted(bundles.iterdir()) if p.is_dir()}
    floors = dict(params.gate.recall_floors)
    rows = sweep(frame, metas, floors, args.checks, args.targets, params.recall_targets.confidence)
    doc = {**header(f"python benchmarks/recall_target_sweep.py <demo workspace> --checks {' '.join(args.checks)} "
                    f"--targets {' '.join(map(str, args.targets))}"),
           "confidence": params.recall_targets.confidence,
           "workspace_targets": {k: v for k, v in dict(params.recall_targets).items() if k in args.checks},
           "photos": {s: int((frame["split"] == s).sum()) for s in SPLITS},
           "note": "one trained candidate per family (seed %d): thresholds re-chosen on the recorded validation "
                   "scores, nothing retrained; the reviewer re-decided from its recorded scores" % params.seed,
           "checks": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
