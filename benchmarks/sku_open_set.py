"""The SKU matcher's open-set figures for candidate settings, trained and evaluated by the family's own code.

Usage, after a default-size `make demo` (its workspace holds the versioned data, the gallery and the
trunk-feature cache):

    .venv/bin/python benchmarks/sku_open_set.py /tmp/demo --variant 192px image_size=192 \\
        --variant 256px image_size=256 [--seeds 7 8 9]

Each variant overrides ``train.sku`` keys of the workspace's params.yaml (``key=value``, YAML values) and
optionally the seed; it trains the sku family (:func:`pipelines.train.families.sku.train`) in a scratch
project that links the workspace's data, gallery and feature cache, evaluates it
(:func:`pipelines.train.families.sku.evaluate`: thresholds from validation, figures on the frozen test
split) and keeps the figures of metrics/sku.json. Writes benchmarks/results/sku_open_set.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import time
from pathlib import Path

import yaml

OUT = Path(__file__).parent / "results" / "sku_open_set.json"
KEYS = ("seen_top1", "enrolled_untrained_top1", "wrong_claim_recall", "wrong_claim_recall_colour_variant",
        "wrong_claim_recall_layout_variant", "outside_catalogue_recall", "genuine_false_alarm_rate", "auto_pass_share",
        "genuine_photos", "wrong_claim_photos", "colour_variant_photos", "layout_variant_photos",
        "outside_catalogue_photos")


def run_variant(workspace: Path, scratch: Path, overrides: dict, seed: int | None) -> dict:
    from pipelines.params import load_params
    from pipelines.train.families import sku

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for link in ("data", ".cache", "gallery"):
        os.symlink(workspace / link, scratch / link)
    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    raw["train"]["sku"].update(overrides)
    if seed is not None:
        raw["seed"] = seed
    (scratch / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(scratch / "params.yaml")
    started = time.perf_counter()
    record = sku.train(scratch, params)
    metrics = sku.evaluate(scratch, params)
    return {"overrides": overrides, "seed": raw["seed"], "train_seconds": record["seconds"],
            "seconds": round(time.perf_counter() - started, 1), "thresholds": metrics["thresholds"],
            "test": {k: metrics["test"][k] for k in KEYS}, "validation": {k: metrics["validation"][k] for k in KEYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"))
    ap.add_argument("--seeds", nargs="*", type=int, default=[None])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/sku_open_set"))
    args = ap.parse_args()
    workspace = args.workspace.resolve()
    os.chdir(workspace)                      # relative paths (feature cache) resolve in the workspace, as in dvc repro
    results = []
    for name, *pairs in args.variant:
        overrides = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}
        for seed in args.seeds:
            row = run_variant(workspace, args.scratch / f"{name}-{seed}", overrides, seed)
            results.append({"variant": name, **row})
            print(json.dumps(results[-1]["test"] | {"variant": name, "seed": row["seed"]}), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "command": "python benchmarks/sku_open_set.py " + " ".join(
            f"--variant {' '.join(v)}" for v in args.variant) + (f" --seeds {' '.join(map(str, args.seeds))}"
                                                                  if args.seeds != [None] else ""),
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "workspace_revision": _revision(workspace), "results": results}, indent=1) + "\n")
    print(f"wrote {OUT}")


def _revision(workspace: Path) -> str | None:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=workspace, capture_output=True, text=True)
    return out.stdout.strip() or None


if __name__ == "__main__":
    main()
