"""What serving a unit as INT8 does to the gate's real-photo figures.

Usage, after the reviewer stage has run in a workspace (its bundles and ``metrics/reviewer.json``'s INT8 choice):

    .venv/bin/python benchmarks/int8_real_photos.py <workspace> --unit <stage id or graph name> [--unit ...]

For the units as the stage chose them, with every ``--unit`` added, with every ``--unit`` removed, and all FP32, it
measures the gate's real-photo figures (:func:`pipelines.release.real_photos.gate_figures`) on the real check photos
(``real_photos.checks``, what the gate reads) and on ``serving.int8.real_photo_views`` views of each real training
photo (what the INT8 choice compares, :class:`pipelines.release.real_photos.TrainingPhotoMemo`), with this
checkout's params.yaml. Writes benchmarks/results/int8_real_photos.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--unit", action="append", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_real_photos.json")
    args = ap.parse_args()
    ws = args.workspace.resolve()

    from pipelines.params import load_params
    from pipelines.release.real_photos import BUNDLES, FAMILIES, gate_figures, measure, photo_set, training_photo_set
    from pipelines.serve.models import ReviewerModels

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    record = json.loads((ws / "metrics" / "reviewer.json").read_text())["int8"]
    served = list(record["served"])
    unknown = [u for u in args.unit if u not in record["units"]]
    if unknown:
        raise SystemExit(f"not a unit of these bundles: {unknown}; units: {sorted(record['units'])}")
    bundles = {f: str(ws / BUNDLES / f) for f in FAMILIES}
    sets = {"check_photos": (photo_set(params), None),
            "training_photos": (training_photo_set(params), ())}
    configs = {"as_chosen": served, "with_units": sorted(set(served) | set(args.unit)),
               "without_units": [u for u in served if u not in args.unit], "all_fp32": []}
    out = {}
    for name, units in configs.items():
        out[name] = {"int8": units}
        models = {f: ReviewerModels.as_served({f: p}, params, int8=units) for f, p in bundles.items()}
        for label, (photos, soft_focus) in sets.items():
            started = time.perf_counter()
            metrics, _ = measure(models, params, photos, soft_focus=soft_focus)
            out[name][label] = {**gate_figures(metrics), "views": len(photos.base),
                                "seconds": round(time.perf_counter() - started, 1)}
            print(name, label, out[name][label], flush=True)
    doc = {"command": f"python benchmarks/int8_real_photos.py {ws} " + " ".join(f"--unit {u}" for u in args.unit),
           "date": datetime.date.today().isoformat(), "machine": platform.machine(), "note": args.note,
           "units": args.unit, "results": out}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
