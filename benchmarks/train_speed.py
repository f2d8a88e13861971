"""One family's training time (or the whole-reviewer stage's) under two versions of the code, on one demo workspace,
and whether the results agree.

    # after `make demo` (a workspace with versioned data and warm caches)
    .venv/bin/python benchmarks/train_speed.py /tmp/demo manipulation --old /tmp/demo --new . \
        --scratch /tmp/train-speed --out benchmarks/results/train_speed_manipulation.json
    .venv/bin/python benchmarks/train_speed.py /tmp/demo reviewer --old <checkout> --new . --scratch ... --out ...

The workspace is copied once into ``--scratch`` (its venv, Airflow home and Bento store left out; its trunk-feature
cache and rendered extra photos kept, so that neither run pays for them), and ``reviewops train FAMILY`` runs there
twice: with the ``pipelines`` package of ``--new`` first, then of ``--old`` (``PYTHONPATH``; the workspace's venv runs
both). Each run's ``models/<family>/train.json`` gives its seconds; the saved nets of both runs are compared tensor
by tensor (training on a workspace is not bit-repeatable run to run: the same code twice differs too, so read
the comparison as one of time unless both runs of the same code agree).

``reviewer`` in place of a family runs ``reviewops reviewer`` (every candidate exported, the INT8 choice, the review
of validation, test and the live mix) instead: its wall seconds, and each run's figures from ``metrics/reviewer.json``
(clean auto-pass and lowest photo recall per split, the units served as INT8)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

LEFT_OUT = (".venv", ".airflow", ".bentoml")


def _code(path: Path) -> str:
    """The commit of a checkout, with ``+changes`` when its pipelines/ differ from it."""
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "pipelines"], capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def same_weights(a: Path, b: Path) -> dict[str, bool]:
    """Each saved net (``*.pt`` of ``a``) against the one of the same name in ``b``: every tensor equal."""
    import torch

    out = {}
    for f in sorted(a.glob("*.pt")):
        x = torch.load(f, map_location="cpu", weights_only=False)["state_dict"]
        y = torch.load(b / f.name, map_location="cpu", weights_only=False)["state_dict"]
        out[f.name] = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return out


def reviewer_figures(path: Path) -> dict:
    """A reviewer stage's figures: clean auto-pass and the lowest photo recall per split, the units served INT8."""
    doc = json.loads(path.read_text())
    out = {}
    for split in ("val", "test", "live_mix"):
        recall = {k: v for k, v in (doc.get(split) or {}).get("photo_recall", {}).items() if v is not None}
        low = min(recall, key=recall.get) if recall else None
        out[split] = {"clean_auto_pass": (doc.get(split) or {}).get("clean_auto_pass"),
                      "lowest_photo_recall": [low, recall.get(low)] if low else None}
    out["int8_served"] = (doc.get("int8") or {}).get("served")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("family")
    ap.add_argument("--old", type=Path, required=True, help="checkout whose pipelines/ is the code before")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--scratch", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ws, scratch = args.workspace.resolve(), args.scratch.resolve()
    work = scratch / "workspace"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(ws, work, symlinks=True, ignore=lambda d, names: [n for n in names if Path(d) == ws and n in LEFT_OUT])
    runs = {}
    reviewer = args.family == "reviewer"
    command = ["reviewer"] if reviewer else ["train", args.family]
    for label, code in (("new", args.new.resolve()), ("old", args.old.resolve())):
        env = {**os.environ, "PYTHONPATH": str(code)}
        started = time.perf_counter()
        with open(scratch / f"{label}.log", "w") as log:
            subprocess.run([str(ws / ".venv" / "bin" / "reviewops"), *command], cwd=work, env=env,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        wall = time.perf_counter() - started
        kept = scratch / label
        if kept.exists():
            shutil.rmtree(kept)
        if reviewer:
            kept.mkdir(parents=True)
            shutil.copy(work / "metrics" / "reviewer.json", kept / "reviewer.json")
            runs[label] = {"code": _code(code), "seconds": round(wall, 1), "wall_seconds": round(wall, 1),
                           **reviewer_figures(kept / "reviewer.json")}
        else:
            shutil.copytree(work / "models" / args.family, kept)
            record = json.loads((kept / "train.json").read_text())
            runs[label] = {"code": _code(code), "seconds": record["seconds"], "fit_seconds": record.get("fit_seconds"),
                           "wall_seconds": round(wall, 1), "epochs_run": record.get("epochs_run")}
        print(label, runs[label], flush=True)
    weights = None if reviewer else same_weights(scratch / "new", scratch / "old")
    doc = {"command": f"python benchmarks/train_speed.py {ws} {args.family} --old {args.old} --new {args.new} "
                      f"--scratch {args.scratch} --out {args.out}",
           "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "family": args.family, "runs": runs,
           "new_over_old": round(runs["new"]["seconds"] / runs["old"]["seconds"], 3),
           "weights_bit_identical": weights}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("new_over_old", "weights_bit_identical")}))


if __name__ == "__main__":
    main()
