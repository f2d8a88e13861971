"""The whole reviewer's models in process, two projects side by side: time per photo, one at a time and in batches.

    # after the reviewer stage in both (models/reviewer/bundles/<family>, the precision it chose)
    .venv/bin/python benchmarks/reviewer_latency.py --a /tmp/demo --b /tmp/variant [--photos 48] [--rounds 5]

Each side's bundles are loaded as the service loads them (:class:`pipelines.serve.models.ReviewerModels`, two
threads, each unit at the precision the reviewer stage chose). The same test-split photos of ``--a`` (decoded and
resized as the service prepares them) go through each side in turn, alternating A and B for ``--rounds`` rounds:
one photo per call (median and p90 ms per photo, and the process's CPU ms per photo), batches of 8 (median ms per
photo), and one photo per call with every unit on the calling thread (CPU ms per photo: what the models need of a
core). The ratio B/A measured in one run is what counts on these shared machines. Writes benchmarks/results/reviewer_latency.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load(root: Path):
    from pipelines.serve.models import ReviewerModels

    base = root / "models" / "reviewer" / "bundles"
    bundles = {p.name: p for p in sorted(base.iterdir()) if (p / "meta.json").exists()}
    if not bundles:
        raise SystemExit(f"{base} holds no bundles: run `reviewops reviewer` in {root} first")
    return ReviewerModels(bundles, threads=2)


def photos(root: Path, n: int) -> np.ndarray:
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.serve.images import load_resized
    from pipelines.train.families.common import load_frame

    df = split_frame(load_frame(root), "test").sort_values("listing_id").head(n)
    return load_resized(list(df["path"]), load_params(root / "params.yaml").data.image_size)


def per_photo(run, x: np.ndarray, batch: int) -> tuple[list[float], list[float]]:
    """(CPU ms, wall ms) per photo of each call of ``run`` over ``x`` in calls of ``batch`` photos (CPU: the
    process's)."""
    cpu, wall = [], []
    for i in range(0, len(x) - batch + 1, batch):
        c, w = time.process_time(), time.perf_counter()
        run(x[i:i + batch])
        cpu.append((time.process_time() - c) * 1000 / batch)
        wall.append((time.perf_counter() - w) * 1000 / batch)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="project A (the baseline)")
    ap.add_argument("--b", type=Path, required=True, help="project B")
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reviewer_latency.json")
    args = ap.parse_args()
    x = photos(args.a, args.photos)
    sides = {"a": load(args.a), "b": load(args.b)}
    for models in sides.values():                               # warm-up
        models.infer(x[:8])
        models.infer(x[:1])
    one = {k: [] for k in sides}
    eight = {k: [] for k in sides}
    cpu_one = {k: [] for k in sides}
    cpu_serial = {k: [] for k in sides}
    for _ in range(args.rounds):
        for key, models in sides.items():
            cpu, wall = per_photo(models.infer, x, 1)
            one[key] += wall
            cpu_one[key] += cpu
            eight[key] += per_photo(models.infer, x, 8)[1]
            cpu_serial[key] += per_photo(models.infer_serial, x, 1)[0]   # every unit on the calling thread
    result = {
        "command": "python benchmarks/reviewer_latency.py --a <project A> --b <project B> "
                   f"--photos {args.photos} --rounds {args.rounds}",
        "date": datetime.now(UTC).date().isoformat(), "machine": platform.machine(), "processor": platform.processor(),
        "a": str(args.a), "b": str(args.b), "photos": len(x), "rounds": args.rounds, "threads": 2,
        "cropped_graphs": {k: list(m.cropped) for k, m in sides.items()},
        "precision": {k: dict(sorted(m.precision.items())) for k, m in sides.items()},
    }
    for key in sides:
        result[key] = {"ms_per_photo_batch1_p50": round(float(np.median(one[key])), 2),
                       "ms_per_photo_batch1_p90": round(float(np.percentile(one[key], 90)), 2),
                       "ms_per_photo_batch8_p50": round(float(np.median(eight[key])), 2),
                       # the process's CPU per photo: one photo per call as served, and every unit on one thread
                       "cpu_ms_per_photo_batch1_p50": round(float(np.median(cpu_one[key])), 2),
                       "cpu_ms_per_photo_serial_p50": round(float(np.median(cpu_serial[key])), 2)}
    result["ratio_b_over_a"] = {k: round(result["b"][k] / result["a"][k], 3) for k in result["a"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("a", "b", "ratio_b_over_a")}, indent=1))


if __name__ == "__main__":
    main()
