"""Does bfloat16 autocast make a family's training step faster on these CPUs? One training step (forward of the
trainable stages on cached-feature-shaped input, BCE loss, backward, AdamW) of each one-score family's net, as
``train.<family>`` builds it, in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``, alternated.

    .venv/bin/python benchmarks/train_autocast.py --out benchmarks/results/train_autocast.json

The input is random (speed does not depend on the values) at the shape of the family's cached trunk features and
its batch size; the median of ``--steps`` steps after ``--warmup`` is taken in each of ``--rounds`` rounds (the
modes alternated, the first of each round swapped round to round), and the fastest round of each mode compared.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.params import load_params  # noqa: E402
from pipelines.train.families import scalar  # noqa: E402

FAMILIES = ("manipulation", "blur")


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":", 1)[1].split() if f in {"avx512_bf16", "amx_bf16", "avx512_vnni"})


def step_ms(net, x, y, opt, bf16: bool, steps: int, warmup: int) -> float:
    net.train()
    times = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logit = net.from_features(x).reshape(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - started)
    kept = sorted(times[warmup:])
    return kept[len(kept) // 2] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "params.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    torch.set_num_threads(params.train.threads)
    torch.manual_seed(0)
    results = {}
    for family in FAMILIES:
        s = params.train.family(family)
        arch = {"trunk_split": s.trunk_split, "pretrained": params.train.pretrained,
                "image_size": params.train.input_size(family), "tail_stages": s.tail_stages, "outputs": 1}
        if getattr(s, "input_filter", "none") != "none":
            arch["input_filter"] = s.input_filter
        net = scalar.build(arch)
        with torch.no_grad():
            shape = net.trunk.eval()(torch.zeros(1, 3, arch["image_size"], arch["image_size"])).shape[1:]
        x = torch.randn(s.batch_size, *shape).contiguous(memory_format=torch.channels_last)
        y = torch.rand(s.batch_size)
        opt = torch.optim.AdamW(list(net.tail.parameters()) + list(net.head.parameters()), lr=1e-4)
        runs = {"fp32": [], "bf16": []}
        for r in range(args.rounds):                    # ABBA: neither mode always runs first
            for mode in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
                runs[mode].append(round(step_ms(net, x, y, opt, mode == "bf16", args.steps, args.warmup), 1))
                print(family, mode, runs[mode][-1], "ms per step", flush=True)
        results[family] = {"feature_shape": list(shape), "batch_size": s.batch_size, "ms_per_step": runs,
                           "bf16_over_fp32": round(min(runs["bf16"]) / min(runs["fp32"]), 3)}
    doc = {"command": f"python benchmarks/train_autocast.py --steps {args.steps} --rounds {args.rounds} --out {args.out}",
           "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "torch": torch.__version__,
           "threads": params.train.threads, "families": results}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({f: r["bf16_over_fp32"] for f, r in results.items()}))


if __name__ == "__main__":
    main()
