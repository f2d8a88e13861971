"""Collect what `dvc repro` measured on the demo data into benchmarks/results/models_demo.json.

Usage, in a clone (the demo versions data and trains in the work tree it runs in):

    git clone <this repo> /tmp/reviewops && cd /tmp/reviewops
    make demo                      # generate + validate + version 6000 photos (seed 7), then dvc repro
    .venv/bin/python benchmarks/models_demo.py --repo . --repro-seconds <wall time of dvc repro>

Copies every family's metrics/<family>.json (all figures on the frozen test split, thresholds from
validation) and the training seconds of every model from models/**/train.json; nothing is
recomputed here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from pipelines.train.evaluate import read_metrics
from pipelines.train.families import FAMILIES
from pipelines.params import load_params

OUT = Path(__file__).parent / "results" / "models_demo.json"


def _train_seconds(repo: Path) -> dict:
    seconds = {}
    for path in sorted((repo / "models").glob("*/train.json")) + sorted((repo / "models").glob("*/*/train.json")):
        record = json.loads(path.read_text())
        seconds[str(path.parent.relative_to(repo / "models"))] = record["seconds"]
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--repro-seconds", type=float, default=None, help="wall time of the `dvc repro` that trained them")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    repo = args.repo.resolve()
    params = load_params(repo / "params.yaml")
    seconds = _train_seconds(repo)
    per_family = {f: round(sum(v for k, v in seconds.items() if k == f or k.startswith(f + "/")), 1) for f in FAMILIES}
    result = {
        "command": "make demo  (then: python benchmarks/models_demo.py --repo . --repro-seconds S)",
        "data": {"profile": "demo", "photos": params.data.profiles["demo"].n, "seed": params.data.profiles["demo"].seed},
        "train_profile": params.train.profile,
        "train_seconds_per_family": per_family,
        "train_seconds_total": round(sum(per_family.values()), 1),
        "dvc_repro_wall_seconds": args.repro_seconds,
        "train_seconds_per_model": seconds,
        "metrics": {f: read_metrics(f, repo) for f in FAMILIES if (repo / "metrics" / f"{f}.json").exists()},
        "machine": {"cpu": platform.machine(), "torch_threads": params.train.threads,
                    "torch": torch.__version__},
        "date": datetime.date.today().isoformat(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}: training {result['train_seconds_total']:.0f} s in all, {per_family}")


if __name__ == "__main__":
    main()
