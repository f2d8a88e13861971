"""What a moving average of the weights (``train.<family>.ema_decay``) costs a training step: one step of the SKU
embedding as ``train.sku`` builds it (its trainable stages on cached-feature-shaped input, CE + batch-hard triplet,
backward, AdamW) against one :class:`pipelines.train.harness.WeightAverage` update of the same parameters, measured
alternately in one run.

    .venv/bin/python benchmarks/ema_update_cost.py --out benchmarks/results/ema_update_cost.json

The input is random (speed does not depend on the values) at the shape of the cached trunk features of a
``train.sku.image_size`` crop, with the params' P x K batch; the median of ``--steps`` after ``--warmup`` is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.data.synth.catalog import catalogue_skus  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from pipelines.train.families.sku import SkuNet, batch_hard_triplet  # noqa: E402
from pipelines.train.harness import WeightAverage  # noqa: E402
from pipelines.train.trunk import Trunk  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "params.yaml")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    params = load_params(args.params)
    settings = params.train.sku
    torch.set_num_threads(params.train.threads)
    torch.manual_seed(0)
    classes = len(catalogue_skus()) - settings.holdout_skus   # the SKUs the embedding trains on
    net = SkuNet(Trunk(settings.trunk_split, pretrained=False), settings.embedding_dim, classes)
    net = net.to(memory_format=torch.channels_last)
    size = params.train.input_size("sku")
    with torch.no_grad():
        shape = net.trunk(torch.zeros(1, 3, size, size)).shape[1:]
    batch = settings.p * settings.k
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.arange(settings.p).repeat_interleave(settings.k) % classes
    trainable = [p for n, p in net.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.lr)
    average = WeightAverage(net, trainable, 0.99)
    ce = torch.nn.CrossEntropyLoss()
    net.train()

    def step() -> float:
        t = time.perf_counter()
        e, logits = net.train_outputs(x)
        loss = ce(logits, y) + batch_hard_triplet(e, y, settings.triplet_margin)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - t

    def update() -> float:
        t = time.perf_counter()
        average.update()
        return time.perf_counter() - t

    steps, updates = [], []
    for i in range(args.warmup + args.steps):
        s, u = step(), update()
        if i >= args.warmup:
            steps.append(s)
            updates.append(u)
    step_ms, update_ms = statistics.median(steps) * 1000, statistics.median(updates) * 1000
    doc = {"command": "python benchmarks/ema_update_cost.py --out " + str(args.out),
           "date": datetime.now(UTC).date().isoformat(), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "threads": params.train.threads, "family": "sku",
           "trainable_parameters": sum(p.numel() for p in trainable), "batch": batch, "input_shape": list(shape),
           "step_ms_median": round(step_ms, 2), "update_ms_median": round(update_ms, 3),
           "update_share_of_step": round(update_ms / step_ms, 5), "steps": args.steps}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
