"""Latency of the combined prohibited ONNX graph against the number of categories, per per-category tail.

Usage (no data needed; the trunk carries the package's ImageNet weights):

    .venv/bin/python benchmarks/prohibited_tail_latency.py [--tails full5 ...] [--categories 1 5 10 20 40] \
        [--threads 1 2] [--runs 30] [--warmup 10] [--sessions 3] [--identical]

For each tail (``full5``: stages 5-6 + head conv per category after trunk split 5; ``splitS_light0``: trunk split
S, ``tail_stages: 0``, a 1x1 conv to 256 channels + average and max pooling per category; ``neck5``: trunk split 5,
stages 5-6 one neck shared by every category (``train.prohibited.neck``), then per category that 1x1 conv and
pooling on the neck's output) and each number of categories,
``CombinedProhibited(trunk, {c0..cN-1: CategoryClassifier(trunk, tail_stages)}, neck)`` is exported with
``pipelines.train.onnx_export.export_dynamic_batch`` (input 256 px) and run on ONNX Runtime's CPU provider at
batch 1 (inter-op threads 1, intra-op threads as given; serving uses 1) in ``--sessions`` fresh sessions of
``--warmup`` untimed and ``--runs`` timed runs each; the figure is the median of the sessions' medians (each
session's median is kept too), with its ratio to the 1-category graph's.
Writes benchmarks/results/prohibited_tail_latency.json (``--out``).

Every category's weights must differ, as trained ones do: untrained full tails are identical copies of the
ImageNet stages, and then the exporter keeps one copy of equal initializers and ONNX Runtime's common-subexpression
elimination runs one tail for all of them (40 untouched full5 categories exported as 15 MB and ran as fast as 1).
So each category's parameters are scaled by ``1 + 0.01 * N(0, 1)``, elementwise, from its own seed (``--identical``
leaves them as built, to show the effect).

The issue's aim (issue 21): 20 categories at most 1.5x, 40 at most 2x the latency of 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.train.families.prohibited import CategoryClassifier, CombinedProhibited, Neck
from pipelines.train.onnx_export import export_dynamic_batch
from pipelines.train.trunk import Trunk

OUT = Path(__file__).parent / "results" / "prohibited_tail_latency.json"
SIZE = 256
TAILS = {"full5": (5, None), "split5_light0": (5, 0), "split6_light0": (6, 0), "split7_light0": (7, 0),
         "neck5": (5, "neck")}


def combined(split: int, tail_stages: int | str | None, n: int, identical: bool = False) -> CombinedProhibited:
    """``n`` categories on one trunk (and neck); unless ``identical``, each category's parameters perturbed (see
    above)."""
    torch.manual_seed(0)
    trunk = Trunk(split, pretrained=True)
    neck = Neck(trunk, n).eval() if tail_stages == "neck" else None
    classifiers = {f"c{i}": (CategoryClassifier(trunk, neck=True) if neck is not None
                             else CategoryClassifier(trunk, tail_stages)) for i in range(n)}
    if not identical:
        with torch.no_grad():
            for i, clf in enumerate(classifiers.values()):
                g = torch.Generator().manual_seed(1000 + i)
                for p in clf.parameters():
                    p.mul_(1 + 0.01 * torch.randn(p.shape, generator=g))
    return CombinedProhibited(trunk, classifiers, neck).eval()


def time_session(path: Path, threads: int, runs: int, warmup: int) -> list[float]:
    """Milliseconds of ``runs`` batch-1 runs of a fresh session, after ``warmup`` untimed ones."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    for _ in range(warmup):
        session.run(None, {"photos": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {"photos": x})
        times.append((time.perf_counter() - t) * 1000)
    return times


def measure(path: Path, threads: int, runs: int, warmup: int, sessions: int) -> dict:
    """``sessions`` fresh sessions of ``runs`` runs each: the median of the sessions' medians is the figure (on
    this 2-CPU machine a whole session sometimes runs about 2x slower than the next, mostly at 2 threads)."""
    per = [time_session(path, threads, runs, warmup) for _ in range(sessions)]
    medians = [float(np.median(t)) for t in per]
    pooled = [t for times in per for t in times]
    return {"sessions": sessions, "runs_per_session": runs, "median_ms": round(float(np.median(medians)), 3),
            "session_medians_ms": [round(m, 3) for m in medians],
            "p90_ms": round(float(np.percentile(pooled, 90)), 3), "min_ms": round(float(np.min(pooled)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tails", nargs="+", default=list(TAILS), choices=list(TAILS))
    ap.add_argument("--categories", nargs="+", type=int, default=[1, 5, 10, 20, 40])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per session")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs per session first")
    ap.add_argument("--sessions", type=int, default=3, help="fresh sessions per graph and thread count")
    ap.add_argument("--identical", action="store_true", help="leave every category's weights as built (see above)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--merge", action="store_true", help="keep the other tails' results already in --out")
    args = ap.parse_args()
    torch.set_num_threads(max(args.threads))
    load_start = os.getloadavg()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="prohibited-latency-") as tmp:
        for tail in args.tails:
            split, stages = TAILS[tail]
            rows = []
            for n in args.categories:
                path = Path(tmp) / f"{tail}-{n}.onnx"
                t = time.perf_counter()
                export_dynamic_batch(combined(split, stages, n, args.identical), torch.zeros(2, 3, SIZE, SIZE), path,
                                     "photos", "out")
                row = {"categories": n, "onnx_mb": round(path.stat().st_size / 1e6, 2),
                       "export_s": round(time.perf_counter() - t, 1)}
                for threads in args.threads:
                    row[f"threads{threads}"] = measure(path, threads, args.runs, args.warmup, args.sessions)
                path.unlink()
                rows.append(row)
                print(json.dumps({"tail": tail, **row}), flush=True)
            for threads in args.threads:
                base = rows[0][f"threads{threads}"]["median_ms"]
                for row in rows:
                    row[f"threads{threads}"]["ratio_to_first"] = round(row[f"threads{threads}"]["median_ms"] / base, 3)
            results[tail] = {"trunk_split": split, "tail_stages": stages, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/prohibited_tail_latency.py " + " ".join(sys.argv[1:])
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        kept = {k: v for k, v in old["results"].items() if k not in results}
        for v in kept.values():
            v.setdefault("command", old["command"])
            v.setdefault("date", old["date"])
        results = {**kept, **results}
    args.out.write_text(json.dumps({
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_average_at_start": load_start,
                    "load_average_at_end": os.getloadavg()},
        "weights": "as built (identical copies)" if args.identical else
                   "trunk: ImageNet; each category's parameters scaled by 1 + 0.01 N(0,1) from its own seed",
        "input": f"1 x 3 x {SIZE} x {SIZE} float32 (batch 1), ONNX Runtime CPUExecutionProvider, inter-op threads 1",
        "median_ms": "median over sessions of each session's median", "ratio_to_first":
            f"median_ms over that of the {args.categories[0]}-category graph of the same tail and threads",
        "seconds": round(time.perf_counter() - started, 1), "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
