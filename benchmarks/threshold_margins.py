"""How far above the gate's floors do validation-calibrated thresholds land on test, run after run?

Usage, after one or more default-size demos (each workspace holds trained sku and blur models):

    git clone <this repo> /tmp/demo_final && (cd /tmp/demo_final && make demo)    # repeat per run
    .venv/bin/python benchmarks/threshold_margins.py /tmp/demo_final /tmp/demo_final2 ...

For every workspace it re-derives, from the trained models and the frozen splits, the alarm
thresholds the families would choose at several validation recall targets, and measures on test:

* sku: the alarm's two thresholds (``pipelines.train.families.sku.calibrate_alarm``: the margin
  for wrong claims at ``recall_targets.sku_mismatch``, the similarity for products outside the
  catalogue at each target); outside-catalogue recall (gate floor ``gate.recall_floors.unknown_sku``),
  wrong-claim recall and the false alarms on genuine claims.
* blur: recall of blurred photos (floor ``gate.recall_floors.blur``), flagged share, false-positive
  rate on sharp photos.

Nothing is retrained; the models are the ones each demo trained and registered.
Writes benchmarks/results/threshold_margins.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path


from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import threshold_for_recall
from pipelines.train.families import blur, common, scalar, sku
from pipelines.params import load_params

OUT = Path(__file__).parent / "results" / "threshold_margins.json"
TARGETS = (0.95, 0.96, 0.97, 0.98, 0.99)


def sku_rows(root: Path, params) -> dict:
    net, arch = sku.load_model(root)
    cal, test, _, gallery = sku.scored_frames(root, params, net, arch)     # cal: what the family calibrates on
    val = cal[cal["split"] == "val"].reset_index(drop=True)
    rows = []
    for target in TARGETS:
        thresholds, _ = sku.calibrate_frame(cal, sku.alarm_targets(params, target), params.recall_targets.confidence)
        figures = {split: sku.open_set_metrics(frame, sku.alarms(frame, thresholds, frozenset(gallery[1])))
                   for split, frame in (("val", val), ("test", test))}
        rows.append({"target": target, "thresholds": thresholds,
                     "val_outside_recall": figures["val"]["outside_catalogue_recall"],
                     "test_outside_recall": figures["test"]["outside_catalogue_recall"],
                     "test_wrong_claim_recall": figures["test"]["wrong_claim_recall"],
                     "test_genuine_false_alarm_rate": figures["test"]["genuine_false_alarm_rate"]})
    return {"val_positives": {"outside_catalogue": int(val["outside"].sum()), "wrong_claim": int(val["wrong_claim"].sum())},
            "test_positives": {"outside_catalogue": int(test["outside"].sum()), "wrong_claim": int(test["wrong_claim"].sum())},
            "floor": params.gate.recall_floors["unknown_sku"], "rows": rows}


def blur_rows(root: Path, params) -> dict:
    df = common.load_frame(root)
    val, test = blur.usable(split_frame(df, "val")), blur.usable(split_frame(df, "test"))
    score_v, score_t = (scalar.scores(blur.FAMILY, root, params, d) for d in (val, test))
    pos_v, pos_t = val["blurred"].to_numpy(bool), test["blurred"].to_numpy(bool)
    rows = []
    for target in TARGETS:
        t = threshold_for_recall(score_v, pos_v, target)
        rows.append({"target": target, "threshold": round(float(t), 4),
                     "test_recall": round(float((score_t[pos_t] >= t).mean()), 4),
                     "test_flagged_share": round(float((score_t >= t).mean()), 4),
                     "test_false_positive_rate": round(float((score_t[~pos_t] >= t).mean()), 4)})
    return {"val_positives": int(pos_v.sum()), "test_positives": int(pos_t.sum()),
            "floor": params.gate.recall_floors["blur"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspaces", nargs="+", type=Path, help="demo work trees with trained sku and blur models")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    result = {"measured": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, 2 CPU cores",
              "command": "python benchmarks/threshold_margins.py " + " ".join(str(w) for w in args.workspaces),
              "workspaces": {}}
    for root in args.workspaces:
        result["workspaces"][str(root)] = {"sku": sku_rows(root, params), "blur": blur_rows(root, params)}
        print(f"{root}: done", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for root, r in result["workspaces"].items():
        print(root)
        for row in r["sku"]["rows"]:
            print(f"  sku  {row['calibration']:9s} target {row['target']:.2f}: unknown-SKU recall val "
                  f"{row['val_unknown_recall']:.3f} test {row['test_unknown_recall']:.3f}, "
                  f"auto-pass {row['test_auto_pass_share']:.3f}")
        for row in r["blur"]["rows"]:
            print(f"  blur target {row['target']:.2f}: test recall {row['test_recall']:.3f}, "
                  f"flagged {row['test_flagged_share']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
