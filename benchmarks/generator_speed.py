"""Generator throughput: photos/s on one core (render + JPEG, no disk) and for a whole batch on
all cores (render, JPEG, write, manifest).

    .venv/bin/python benchmarks/generator_speed.py   # writes benchmarks/results/generator_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from pipelines.data.generate import generate_batch, measure_speed
from pipelines.params import load_params


def main() -> None:
    params = load_params()
    single = [measure_speed(n=300, seed=s, params=params) for s in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        n = 2000
        start = time.perf_counter()
        generate_batch(tmp, "bench", n, seed=1, params=params)
        batch_rate = n / (time.perf_counter() - start)
    result = {
        "command": "python benchmarks/generator_speed.py",
        "image_size": params.data.image_size,
        "one_core_photos_per_s": [round(x, 1) for x in single],
        "one_core_photos_per_s_median": round(sorted(single)[1], 1),
        "batch_2000_all_cores_photos_per_s": round(batch_rate, 1),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(__file__).parent / "results" / "generator_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
