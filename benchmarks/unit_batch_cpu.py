"""CPU per photo of each unit of the reviewer's models (YOLO, every trunk stage, every family graph) by batch size.

    # after the reviewer stage (models/reviewer/bundles/<family>, the precision it chose)
    .venv/bin/python benchmarks/unit_batch_cpu.py /tmp/demo [--photos 64] [--rounds 5] [--batches 1 2 4 8 16]

benchmarks/batch_cpu.py found that a batch costs more CPU per photo than one photo when every unit runs it
(1.18x at 8, 1.54x at 16), so the service runs every graph one photo at a time. That is a sum over units that need
not all behave alike: a large convolutional stage may lose its cache at batch 16 while a small tail pays mostly
ONNX Runtime's fixed cost per call. This times each unit alone on one thread, on the inputs it reads in serving
(the test-split photos as the service prepares them, each stage on its predecessor's output, each graph on its
trunk's output, the crop graphs on the detector's crops), and the Python around the graphs (the photo's float
array, the product crop, and each graph's answers: ``answer:<graph>`` is its graph's run plus the answers, so the
sums leave it out and ``answer_over_graph_ms_per_photo`` gives the difference). Each figure is the process's CPU time per photo, the median over the calls
of every round; the batch sizes alternate within each round. Writes benchmarks/results/unit_batch_cpu.json
(``--out``).

What it found on the seed-7 demo (docs/serving.md#cpu-per-photo-chunks-of-one-photo): YOLO and the SKU and
prohibited graphs cost less per photo in a batch, the first trunk stages much more. Commit 3093c83 served those
units batched (``serving.graph_batch``); over HTTP it gained nothing beyond the noise and was reverted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reviewer_latency import load, photos  # noqa: E402


def units(models, x: np.ndarray) -> dict[str, callable]:
    """Unit name -> a function of a slice of the photos that runs that unit alone on those photos' inputs (views, so
    the figures hold no copying of the benchmark's own)."""
    from pipelines.serve.images import product_crop, to_array
    from pipelines.serve.models import _pad, product_boxes

    raws: list[dict] = [{} for _ in range(len(x))]
    for name in models.yolo:
        models._boxes(name, x, raws)
    boxes = product_boxes(raws) if models.yolo else None
    inputs = models._trunk_chunk(x, boxes, "all")                  # (pad, size, chain) -> every photo's value
    out: dict[str, callable] = {}
    for name, (yolo, _) in models.yolo.items():
        out[f"yolo:{name}"] = lambda i, yolo=yolo: yolo.detect(x[i])
    for (pad, size, chain) in inputs:
        if not chain:
            if pad is None:
                out[f"to_array:{size}"] = lambda i, size=size: to_array(x[i], size)
            else:
                out[f"crop:{pad}:{size}"] = lambda i, pad=pad, size=size: to_array(
                    np.stack([product_crop(x[j], boxes[j], pad, size) for j in range(len(x))[i]]), size)
            continue
        session = models.stages[chain[-1]]
        feed = inputs[(pad, size, chain[:-1])]
        label = f"stage:{chain[-1]}" + ("" if pad is None else f":crop{pad}")
        out[label] = lambda i, s=session, f=feed: s.run(None, {s.get_inputs()[0].name: f[i]})
    for name, (session, graph, _, _, chain) in models.graphs.items():
        feed = inputs[(_pad(graph), graph["size"], chain)]
        out[f"graph:{name}"] = lambda i, s=session, f=feed: s.run(None, {s.get_inputs()[0].name: f[i]})
        out[f"answer:{name}"] = lambda i, name=name: models._graph(name, {key: v[i] for key, v in inputs.items()},
                                                                   [{} for _ in range(len(x))[i]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a project after the reviewer stage")
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unit_batch_cpu.json")
    args = ap.parse_args()
    x = photos(args.root, args.photos)
    models = load(args.root)                     # every unit below runs on this thread, never on the models' pool
    runs = units(models, x)
    cpu: dict[str, dict[int, list[float]]] = {u: {b: [] for b in args.batches} for u in runs}
    for u, run in runs.items():                                     # warm-up
        for b in args.batches:
            run(slice(0, b))
    for r in range(args.rounds):
        for u, run in runs.items():
            for b in args.batches:
                for start in range(0, len(x) - b + 1, b):
                    c = time.process_time()
                    run(slice(start, start + b))
                    cpu[u][b].append((time.process_time() - c) * 1000 / b)
        print(f"round {r + 1} done", flush=True)
    ms = {u: {str(b): round(float(np.median(v)), 3) for b, v in by.items()} for u, by in cpu.items()}
    work = {u: m for u, m in ms.items() if not u.startswith("answer:")}    # an answer's time includes its graph's
    total = {str(b): round(sum(m[str(b)] for m in work.values()), 2) for b in args.batches}
    best = {u: min(m, key=lambda b: m[b]) for u, m in work.items()}
    result = {
        "command": "python benchmarks/unit_batch_cpu.py <project> " + " ".join(sys.argv[2:]),
        "date": datetime.now(UTC).date().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "project": str(args.root), "photos": len(x), "rounds": args.rounds,
        "precision": dict(sorted(models.precision.items())),
        "cpu_ms_per_photo": ms, "sum_ms_per_photo": total,
        "ratio_to_batch1": {u: {b: round(v / m["1"], 3) for b, v in m.items()} for u, m in ms.items()},
        "cheapest_batch": best,
        "sum_at_cheapest_ms_per_photo": round(sum(ms[u][b] for u, b in best.items()), 2),
        "answer_over_graph_ms_per_photo": {u: {b: round(v - ms["graph:" + u[7:]][b], 3) for b, v in m.items()}
                                           for u, m in ms.items() if u.startswith("answer:")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for u, m in ms.items():
        print(f"{u:48s} " + "  ".join(f"{b}:{v:7.3f}" for b, v in m.items()))
    print("sum", total, "at the cheapest batch per unit", result["sum_at_cheapest_ms_per_photo"])


if __name__ == "__main__":
    main()
