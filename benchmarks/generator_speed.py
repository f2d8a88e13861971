"""Generator throughput: photos/s on one core (render + JPEG, no disk) and for a whole batch on
all cores (render, JPEG, write, manifest), for params.yaml's product style and, with ``--styles``,
for each style named, one after the other in one run (the ratio is what compares on a shared machine).

    .venv/bin/python benchmarks/generator_speed.py                       # params.yaml's style
    .venv/bin/python benchmarks/generator_speed.py --styles flat shaded  # both, same run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from pipelines.data.generate import generate_batch, measure_speed
from pipelines.params import load_params


def _style_speed(params) -> dict:
    single = [measure_speed(n=300, seed=s, params=params) for s in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        n = 2000
        start = time.perf_counter()
        generate_batch(tmp, "bench", n, seed=1, params=params)
        batch_rate = n / (time.perf_counter() - start)
    return {"one_core_photos_per_s": [round(x, 1) for x in single],
            "one_core_photos_per_s_median": round(sorted(single)[1], 1),
            "batch_2000_all_cores_photos_per_s": round(batch_rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--styles", nargs="+", choices=("flat", "shaded"),
                    help="product styles to time one after the other (default: params.yaml's)")
    args = ap.parse_args()
    params = load_params()
    styles = args.styles or [params.generator.product_style]
    by_style = {}
    for style in styles:
        styled = params.model_copy(update={"generator": params.generator.model_copy(update={"product_style": style})})
        by_style[style] = _style_speed(styled)
        print(style, json.dumps(by_style[style]), flush=True)
    first = by_style[styles[0]]
    result = {
        "command": "python benchmarks/generator_speed.py" + (" --styles " + " ".join(styles) if args.styles else ""),
        "image_size": params.data.image_size,
        "product_style": styles[0],
        **first,
        "by_style": by_style,
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if len(styles) > 1:
        result["batch_ratio_to_first"] = {s: round(v["batch_2000_all_cores_photos_per_s"]
                                                   / first["batch_2000_all_cores_photos_per_s"], 3)
                                          for s, v in by_style.items()}
    out = Path(__file__).parent / "results" / "generator_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
