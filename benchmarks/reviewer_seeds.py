"""The whole reviewer over training runs with different seeds: the spread of each figure (issue 18, item 2).

Usage: workspaces holding the same versioned data, each retrained with its own master ``seed`` in params.yaml
(e.g. a copy of a demo workspace with ``seed: 8`` and ``dvc repro reviewer real_photos``):

    .venv/bin/python benchmarks/reviewer_seeds.py /tmp/demo47 /tmp/seed8 --out benchmarks/results/reviewer_seeds.json

Per workspace it reads metrics/reviewer.json (what the ``reviewer`` stage wrote), metrics/sku.json and
metrics/real_photos.json, and writes each figure per seed with its min, max and spread (max - min): clean
auto-pass per split, the live-mix auto-pass, every test and live-mix photo recall, the clean test photos each
reason stops, the SKU family's open-set figures and the real-photo checks.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from results_header import header

SKU = ("genuine_false_alarm_rate", "seen_top1", "enrolled_untrained_top1", "outside_catalogue_recall")


def figures(ws: Path) -> dict:
    rev = json.loads((ws / "metrics" / "reviewer.json").read_text())
    out = {f"clean_auto_pass.{s}": rev[s]["clean_auto_pass"] for s in ("val", "test", "live_mix") if s in rev}
    out["live_mix_auto_pass"] = rev["live_mix_auto_pass"]
    for split in ("test", "live_mix"):
        out.update({f"photo_recall.{split}.{d}": r for d, r in rev[split]["photo_recall"].items() if r is not None})
    out.update({f"clean_flagged_by.test.{k}": v for k, v in rev["test"].get("clean_flagged_by", {}).items()})
    out["int8_served"] = len((rev.get("int8") or {}).get("served", []))
    sku = json.loads((ws / "metrics" / "sku.json").read_text())["test"]
    out.update({f"sku.{k}": sku[k] for k in SKU if k in sku})
    out.update({f"sku.every_claim.{k}": v for k, v in sku.get("every_claim_recall", {}).items() if k != "photos"})
    real = json.loads((ws / "metrics" / "real_photos.json").read_text())
    out["real.manipulation_false_alarms"] = real["manipulation"].get("false_alarm_rate")
    out["real.manipulation_edit_recall"] = real["manipulation"].get("edit_recall")
    out["real.blur_pooled_spearman"] = real["blur"].get("pooled_spearman")
    out["real.blur_sharp_flagged"] = real["blur"].get("sharp_flagged")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    runs = {}
    for ws in args.workspaces:
        seed = yaml.safe_load((ws / "params.yaml").read_text())["seed"]
        runs[str(seed)] = {"workspace": str(ws), **figures(ws)}
    keys = sorted({k for r in runs.values() for k in r if k != "workspace"})
    spread = {}
    for k in keys:
        values = [r[k] for r in runs.values() if isinstance(r.get(k), (int, float))]
        if values:
            spread[k] = {"min": min(values), "max": max(values), "spread": round(max(values) - min(values), 6)}
    out = {**header("python benchmarks/reviewer_seeds.py " + shlex.join(sys.argv[1:])), "seeds": list(runs),
           "runs": runs, "spread": spread}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for k in ("clean_auto_pass.test", "live_mix_auto_pass", "sku.genuine_false_alarm_rate",
              "real.manipulation_false_alarms"):
        if k in spread:
            print(k, {s: r.get(k) for s, r in runs.items()})


if __name__ == "__main__":
    main()
