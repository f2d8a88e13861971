"""CPU per photo of the reviewer's models in process, by batch size and by how a batch is shared out over the threads.

    # after the reviewer stage (models/reviewer/bundles/<family>, the precision it chose)
    .venv/bin/python benchmarks/batch_cpu.py /tmp/demo [--photos 64] [--rounds 3] [--chunks 0 1 2 4]

Issue 21 asks the model worker to spend at most what the graphs need at batch 1 per photo under load, and less with
batching. This separates the models from the service: the same test-split photos (decoded and resized as the service
prepares them) go through :class:`pipelines.serve.models.ReviewerModels` as the model worker loads it (two threads,
each unit at the precision the reviewer stage chose).

- ``serial``: every unit (YOLO, trunk stages, graphs) one after another on one thread
  (``ReviewerModels.infer_serial``), in batches of 1, 2, 4, 8 and 16: what the models need of a core per photo at
  each batch size; ``serial_batch1_both_cores``: the same at batch 1 on two threads at once (:func:`both_cores`).
- ``infer``: ``ReviewerModels.infer`` on batches of 16 (the greedy batcher's ``serving.batch_max_size``) with the
  batch shared out as ``chunk`` says (0: one part per thread, as before; n: chunks of n photos handed to whichever
  thread is free), and one photo at a time.

Each figure is the process's CPU time per photo (median over the calls of every round) and the wall time per
photo; the configurations alternate within each round. Writes benchmarks/results/batch_cpu.json (``--out``).
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

from reviewer_latency import load, per_photo, photos  # noqa: E402

SERIAL_BATCHES = (1, 2, 4, 8, 16)


def both_cores(run, x: np.ndarray) -> tuple[list[float], list[float]]:
    """(CPU ms, wall ms) per photo of two threads at once, each calling ``run`` one photo at a time over its half of
    ``x``: the units at batch 1 with both cores busy, as under load. Each unit costs more CPU so than with the other
    core idle (the two cores share the caches and memory bandwidth), so this, not ``serial_batch1``, is what a model
    worker kept busy on both cores can be held to."""
    import threading

    halves = np.array_split(np.arange(len(x)), 2)
    threads = [threading.Thread(target=lambda idx=idx: [run(x[i:i + 1]) for i in idx]) for idx in halves]
    c, w = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [(time.process_time() - c) * 1000 / len(x)], [(time.perf_counter() - w) * 1000 / len(x)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a project after the reviewer stage")
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 1, 2, 4])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batch_cpu.json")
    args = ap.parse_args()
    x = photos(args.root, args.photos)
    models = load(args.root)
    runs = {f"serial_batch{b}": (models.infer_serial, b) for b in SERIAL_BATCHES}
    runs["serial_batch1_both_cores"] = (models.infer_serial, 0)
    runs["infer_batch1"] = (models.infer, 1)
    for chunk in args.chunks:
        def infer(batch, chunk=chunk):
            models.chunk = chunk or None
            return models.infer(batch)
        runs[f"infer_batch16_chunk{chunk}"] = (infer, 16)
    for run, batch in runs.values():                             # warm-up
        run(x[:max(batch, 1)])
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for key, (run, batch) in runs.items():
            c, w = per_photo(run, x, batch) if batch else both_cores(run, x)
            cpu[key] += c
            wall[key] += w
        print(f"round {r + 1}: " + ", ".join(f"{k} {np.median(cpu[k]):.1f}" for k in runs), flush=True)
    models.chunk = None
    result = {
        "command": "python benchmarks/batch_cpu.py <project> " + " ".join(sys.argv[2:]),
        "date": datetime.now(UTC).date().isoformat(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "project": str(args.root),
        "photos": len(x), "rounds": args.rounds, "threads": models.threads,
        "precision": dict(sorted(models.precision.items())),
        "cpu_ms_per_photo": {k: round(float(np.median(v)), 2) for k, v in cpu.items()},
        "wall_ms_per_photo": {k: round(float(np.median(v)), 2) for k, v in wall.items()},
    }
    base = result["cpu_ms_per_photo"]["serial_batch1"]
    result["cpu_ratio_to_serial_batch1"] = {k: round(v / base, 3) for k, v in result["cpu_ms_per_photo"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("cpu_ms_per_photo", "wall_ms_per_photo", "cpu_ratio_to_serial_batch1")},
                     indent=1))


if __name__ == "__main__":
    main()
