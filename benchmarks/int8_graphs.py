"""Every served graph at batch 1: ONNX Runtime FP32 and INT8 against OpenVINO FP32 and INT8, speed and deviation.

    # after `reviewops reviewer` in a trained project (it writes each graph's INT8 twin beside it)
    .venv/bin/python benchmarks/int8_graphs.py --root /tmp/demo [--photos 64] [--runs 30]

The graphs are those of the reviewer stage's bundles (``models/reviewer/bundles/<family>``): each frozen trunk
stage once and each family graph after it, a *unit*, with its INT8 twin (ONNX Runtime static quantization, QDQ,
calibrated on validation photos: ``pipelines/release/quantize.py``). Each unit's inputs are real: test-split photos
through the FP32 trunk. For each unit, on one thread, median ms of one photo over ``--runs`` runs:

- ``ort_fp32``, ``ort_int8``: ONNX Runtime's CPU provider (what the service runs);
- ``ov_fp32``, ``ov_int8``: OpenVINO (``pip install openvino``; skipped when it is not installed) compiling the
  same ONNX files, the INT8 one with its QDQ nodes (OpenVINO runs them as int8 where its CPU plugin can);

and the largest |output - ONNX Runtime FP32| of each over the photos. The reviewer's test figures with the chosen
INT8 units, against FP32, are in the project's ``metrics/reviewer.json`` (``int8``) and copied here.
Writes benchmarks/results/int8_graphs.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ort_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def ov_runner(path: Path):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): [1, *model.inputs[0].get_partial_shape()[1:].to_shape()]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x):
        return np.concatenate([request.infer({0: x[i:i + 1]})[compiled.outputs[0]] for i in range(len(x))])
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="a project where `reviewops reviewer` has run")
    ap.add_argument("--photos", type=int, default=32, help="test photos whose outputs are compared")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_graphs.json")
    args = ap.parse_args()

    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.release.quantize import median_ms
    from pipelines.serve.bundle import read_meta
    from pipelines.serve.images import load_resized, to_array

    try:
        import openvino
        ov_version = openvino.__version__
    except ImportError:
        ov_version = None
        print("openvino is not installed (pip install openvino): ONNX Runtime only", flush=True)
    bundles = args.root / "models" / "reviewer" / "bundles"
    df = split_frame(versioned_manifest(args.root), "test").sort_values("listing_id").head(args.photos)
    photos = load_resized(list(df["path"]), 256)
    inputs: dict[tuple, np.ndarray] = {}
    units: dict[str, dict] = {}
    for bundle in sorted(p for p in bundles.iterdir() if p.is_dir()):
        for name, graph in read_meta(bundle)["graphs"].items():
            chain: tuple = ()
            x = inputs.setdefault((graph["size"], chain), to_array(photos, graph["size"]))
            for entry in [*graph.get("trunk", ()), graph]:
                unit = entry.get("id", name)
                fp32 = ort_runner(bundle / entry["file"])
                if unit not in units and "int8" in entry:
                    print(f"{unit}", flush=True)
                    reference = fp32(x)
                    row = {"precision_served": entry.get("precision", "fp32"), "input_shape": list(x.shape[1:])}
                    runners = {"ort_fp32": fp32, "ort_int8": ort_runner(bundle / entry["int8"]["file"])}
                    if ov_version:
                        runners["ov_fp32"] = ov_runner(bundle / entry["file"])
                        runners["ov_int8"] = ov_runner(bundle / entry["int8"]["file"])
                    for key, run in runners.items():
                        row[f"{key}_ms"] = median_ms(lambda: run(x[:1]), args.runs, warmup=5)
                        row[f"{key}_max_abs_diff"] = float(np.abs(run(x) - reference).max())
                    row["output_abs_max"] = float(np.abs(reference).max())
                    units[unit] = row
                    print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_ms")), flush=True)
                if entry is graph:
                    break
                chain += (unit,)
                key = (graph["size"], chain)
                if key not in inputs:
                    inputs[key] = fp32(x)
                x = inputs[key]
    totals = {k: round(sum(u[k] for u in units.values()), 2) for k in next(iter(units.values())) if k.endswith("_ms")}
    record = json.loads((args.root / "metrics" / "reviewer.json").read_text())
    chosen = record.get("int8") or {}
    result = {
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "openvino": ov_version, "photos": len(photos), "runs": args.runs,
        "units": units, "sum_of_units_ms": totals,
        "reviewer": {"served_int8": chosen.get("served"), "test_fp32": chosen.get("fp32_test"),
                     "test_served": {"clean_auto_pass": record["test"]["clean_auto_pass"],
                                     "photo_recall": record["test"]["photo_recall"]},
                     "val_served_clean_auto_pass": record["val"]["clean_auto_pass"],
                     "live_mix_auto_pass": record.get("live_mix_auto_pass")},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(totals), flush=True)


if __name__ == "__main__":
    main()
