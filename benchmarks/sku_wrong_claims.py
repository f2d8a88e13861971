"""What the SKU alarm's margin threshold is calibrated on, compared on trained SKU models.

Usage, on projects whose SKU family is trained (a default-size `make demo` workspace, or the scratch copies
`benchmarks/family_variants.py` leaves):

    .venv/bin/python benchmarks/sku_wrong_claims.py /tmp/demo /tmp/family_variants/sku-base-8 [--out FILE]

For each project: its embedding scores the calibration frame (validation, and the training split's
outside-catalogue photos) and the frozen test split, as ``reviewops evaluate sku`` does; then the alarm is
calibrated with each ``recall_targets.sku_mismatch_claims`` mode (``labelled``, ``every``, ``every_kind``;
:func:`pipelines.train.families.sku.calibrate_frame`) and measured on test: the labelled figures of
metrics/sku.json and the recall over every wrong claim of every test photo, per swap kind
(:func:`pipelines.train.families.sku.every_claim_recall`), and those kinds mixed as test's labelled wrong claims
are (``every_claim_recall_mixed``: the recall the ``every`` mode aims at). Nothing is retrained.
Writes benchmarks/results/sku_wrong_claims.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MODES = ("labelled", "every", "every_kind")
FIGURES = ("genuine_false_alarm_rate", "wrong_claim_recall", "wrong_claim_recall_colour_variant",
           "wrong_claim_recall_layout_variant", "outside_catalogue_recall", "seen_top1", "enrolled_untrained_top1")


def scored(project: Path, params) -> tuple:
    """The project's trained embedding over its enrolled gallery: ``(calibration frame, test frame, enrolled SKUs,
    arch, gallery)``, as :func:`pipelines.train.families.sku.evaluate` scores them (run from the project)."""
    from pipelines.train.families import sku

    os.chdir(project)                        # relative paths (feature cache) resolve in the project
    net, arch = sku.load_model(project)
    cal, test, known, gallery = sku.scored_frames(project, params, net, arch)
    return cal, test, known, arch, gallery


def measure(project: Path) -> dict:
    from pipelines.params import load_params
    from pipelines.train.families import sku

    params = load_params(project / "params.yaml")
    cal, test, known, arch, _ = scored(project, params)
    shares = test.loc[test["wrong_claim"], "swap"].value_counts(normalize=True)   # how test's sellers err
    rows = {}
    for mode in MODES:
        thresholds, source = sku.calibrate_frame(cal, sku.alarm_targets(params), params.recall_targets.confidence,
                                                 mode, known)
        figures = sku.open_set_metrics(test, sku.alarms(test, thresholds, known))
        rows[mode] = {"thresholds": {k: None if v is None else round(v, 4) for k, v in thresholds.items()},
                      "margin_source": source["margin"],
                      **{k: None if figures[k] != figures[k] else round(figures[k], 4) for k in FIGURES},
                      "every_claim_recall": sku.every_claim_recall(test, thresholds, known)}
        every = rows[mode]["every_claim_recall"]
        rows[mode]["every_claim_recall_mixed"] = round(sum(
            share * every[f"{kind}_variant" if kind != "other" else kind] for kind, share in shares.items()), 4)
    return {"project": project.name, "seed": params.seed, "trunk_split": arch["trunk_split"],
            "twins": params.train.sku.twins, "crop_pad": arch.get("crop_pad"),
            "test_photos": {"genuine": int(test["genuine"].sum()), "wrong_claim": int(test["wrong_claim"].sum()),
                            "outside_catalogue": int(test["outside"].sum())},
            "calibration_photos": {"wrong_claim": int(cal["wrong_claim"].sum()), "outside_catalogue": int(cal["outside"].sum())},
            "modes": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("projects", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=RESULTS / "sku_wrong_claims.json")
    ap.add_argument("--note", default=None)
    args = ap.parse_args()
    out = args.out.resolve()
    results = []
    for project in args.projects:
        row = measure(project.resolve())
        results.append(row)
        for mode, r in row["modes"].items():
            print(f"{row['project']:>24} {mode:>10}: genuine false alarms {r['genuine_false_alarm_rate']}, outside "
                  f"{r['outside_catalogue_recall']}, wrong claims {r['wrong_claim_recall']}, every claim "
                  f"{ {k: round(v, 3) for k, v in r['every_claim_recall'].items() if k != 'photos'} }", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python benchmarks/sku_wrong_claims.py " + " ".join(str(p) for p in args.projects),
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        **({"note": args.note} if args.note else {}), "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
