"""Frozen-trunk features: eager torch against ONNX Runtime, on real versioned photos.

Usage (in a project with versioned data, e.g. after `make demo`):

    .venv/bin/python benchmarks/trunk_features.py --repo . --photos 512

For each computation the timm families cache (stem + stages [0, split) at a size, and the stages
between a cached lower split and a higher one), it times the project's own ``pipelines.train.features``
code per photo (JPEG read, resize, forward) on eager torch at batch 32 (the old setting) and 8,
and on ONNX Runtime at batch 8 (export excluded, timed apart), with ``train.threads`` threads; and
the largest difference between the two engines' float16 outputs. Writes
benchmarks/results/trunk_features.json. Nothing is written to the repo's feature cache.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from pipelines.train import features
from pipelines.train.families import common
from pipelines.params import load_params
from pipelines.train.trunk import Trunk

OUT = Path(__file__).parent / "results" / "trunk_features.json"


def _per_photo(fn, n: int) -> float:
    started = time.perf_counter()
    fn()
    return round((time.perf_counter() - started) / n * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--photos", type=int, default=512)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    repo = args.repo.resolve()
    params = load_params(repo / "params.yaml")
    torch.set_num_threads(params.train.threads)
    df = common.load_frame(repo).head(args.photos)
    paths = list(df["path"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="trunk-features-") as tmp:
        for split, size in ((3, 256), (5, 192)):
            trunk = Trunk(split, pretrained=params.train.pretrained)
            onnx = features._onnx_file(trunk, size, tmp, rows=len(paths))
            started = time.perf_counter()
            features._session(trunk, torch.zeros(2, 3, size, size), onnx)
            export_s = round(time.perf_counter() - started, 1)
            compute = features.compute
            eager32 = _per_photo(lambda: compute(trunk, paths, size, batch_size=32), len(paths))
            eager8 = _per_photo(lambda: compute(trunk, paths, size, batch_size=8), len(paths))
            ort8 = _per_photo(lambda: compute(trunk, paths, size, batch_size=8, onnx_file=onnx), len(paths))
            a = compute(trunk, paths[:64], size, onnx_file=onnx).float()
            b = compute(trunk, paths[:64], size).float()
            row = {"computation": f"photos -> split {split} at {size} px", "photos": len(paths),
                   "eager_batch32_ms_per_photo": eager32, "eager_batch8_ms_per_photo": eager8,
                   "onnxruntime_batch8_ms_per_photo": ort8, "speedup_vs_batch32": round(eager32 / ort8, 2),
                   "export_seconds": export_s, "max_abs_difference_float16": float((a - b).abs().max()),
                   "output_max_abs": float(b.abs().max())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"command": f"python benchmarks/trunk_features.py --repo <project with versioned data> --photos {args.photos}",
           "threads": params.train.threads, "cpu_count": os.cpu_count(), "date": datetime.date.today().isoformat(),
           "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
