"""Where the SKU alarm's similarity threshold is calibrated: validation's outside-catalogue photos with the training
split's (as before) or with generated ones (``recall_targets.extra_positives.unknown_sku``), and what each gives at
several recall targets on photos nothing calibrated on.

Usage, after a default-size demo (its trained embedding, gallery and margin threshold):

    .venv/bin/python benchmarks/sku_outside_calibration.py /tmp/demo_seed7 \\
        --out benchmarks/results/sku_outside_calibration.json

``sets``: per set of outside-catalogue photos (validation's, the training split's, the generated calibration ones,
the test split's, the gate's generated test ones) the count, the 95th percentile of the claimed SKU's similarity
(the photos that set a threshold near 0.98) and the share the alarm sends to a person at the workspace's own
thresholds. ``targets``: per calibration set and ``recall_targets.unknown_sku`` target, the similarity threshold,
then on the test split the genuine claims flagged (all, and on photos with no other defect), the outside-catalogue
recall there, on the gate's generated test photos and pooled (what the gate judges), and wrong-claim recall.
Renders the generated photos into the workspace's ``.reviewops/enriched`` as ``reviewops evaluate sku`` does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from results_header import header
from sku_genuine_alarms import BY_PHOTO, photo_labels, workspace_params
from sku_wrong_claims import scored

TARGETS = (0.96, 0.97, 0.98, 0.99)


def _r(x) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def measure(workspace: Path, scratch: Path, generated_n: int) -> dict:
    from pipelines.train.families import sku

    params = workspace_params(workspace, scratch)
    params = params.model_copy(update={"recall_targets": params.recall_targets.model_copy(update={
        "extra_positives": {**params.recall_targets.extra_positives, "unknown_sku": generated_n}})})
    without = params.model_copy(update={"recall_targets": params.recall_targets.model_copy(update={
        "extra_positives": {**params.recall_targets.extra_positives, "unknown_sku": 0}})})
    own = json.loads((workspace / "metrics" / "sku.json").read_text())["thresholds"]
    cal, test, known, arch, gallery = scored(workspace, params)            # validation + generated calibration photos
    net, _ = sku.load_model(workspace)
    df = sku.common.load_frame(workspace)
    old = sku.calibration_frame(workspace, without, df, net, arch, gallery)  # validation + the training split's
    gate_test = sku.generated_outside(workspace, params, net, arch, gallery)
    outside = test[test["outside"]]
    sets = {"validation": cal[(cal["split"] == "val") & cal["outside"]], "training_split": old[old["split"] == "train"],
            "generated_calibration": cal[cal["split"] == "generated"], "test_split": outside, "gate_generated_test": gate_test}
    labels = photo_labels(workspace, params, test["listing_id"])
    clean = ~labels[list(BY_PHOTO)].any(axis=1).to_numpy()
    genuine = test["genuine"].to_numpy()
    out = {"seed": params.seed, "own_thresholds": own,
           "sets": {name: {"photos": int(len(f)), "similarity_p95": _r(np.nanquantile(f["similarity"], 0.95)),
                           "recall_at_own_thresholds": _r(sku.alarms(f, own, known).mean())} for name, f in sets.items()},
           "targets": {}}
    for name, frame in (("validation_and_training_split", old), ("validation_and_generated", cal)):
        for target in TARGETS:
            thr, source = sku.calibrate_frame(frame, sku.alarm_targets(params, target), params.recall_targets.confidence,
                                              params.recall_targets.sku_mismatch_claims, known)
            alarm = sku.alarms(test, thr, known)
            figures = {**sku.open_set_metrics(test, alarm),
                       **sku.pooled_outside(test, alarm, gate_test, thr, known)}
            out["targets"][f"{name} {target}"] = {
                "similarity_threshold": _r(thr["similarity"]), "source": source["similarity"],
                "genuine_false_alarm_rate": _r(figures["genuine_false_alarm_rate"]),
                "genuine_no_other_defect_flagged": _r(alarm[genuine & clean].mean()),
                "outside_catalogue_recall": _r(figures["outside_catalogue_recall"]),
                "generated_outside_catalogue_recall": _r(figures.get("generated_outside_catalogue_recall")),
                "outside_catalogue_recall_pooled": _r(figures.get("outside_catalogue_recall_pooled")),
                "wrong_claim_recall": _r(figures["wrong_claim_recall"])}
            print(name, target, out["targets"][f"{name} {target}"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--generated", type=int, default=2000, help="generated outside-catalogue calibration photos")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sku_outside_calibration.json")
    args = ap.parse_args()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        row = measure(args.workspace.resolve(), Path(scratch), args.generated)
    out.write_text(json.dumps({**header(f"python benchmarks/sku_outside_calibration.py <workspace> --generated "
                                        f"{args.generated}"), "note": args.note, **row}, indent=1) + "\n")
    print(json.dumps(row["sets"], indent=1))


if __name__ == "__main__":
    main()
