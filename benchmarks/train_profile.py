"""Where a family's training time goes: py-spy samples every `reviewops train` process while `make demo` (or
`dvc repro`) runs, and the samples are summarised per function.

    # py-spy outside the project's venv: .venv/bin/uv pip install --target /tmp/pyspy py-spy
    .venv/bin/python benchmarks/train_profile.py watch --py-spy /tmp/pyspy --dir /tmp/prof &   # then make demo
    .venv/bin/python benchmarks/train_profile.py summarise /tmp/prof/train_*.txt --out benchmarks/results/train_profile.json

``watch`` attaches ``py-spy record --rate 20 --nonblocking --format raw`` to each new ``reviewops train`` process (its
raw stacks go to ``DIR/<command>.<pid>.txt`` when the process ends) until it is stopped. ``summarise`` gives, per
file, the seconds sampled and the share of samples inside each function (inclusive) and at each leaf: the training
loop (``fit``), the backward pass, the batches' indexing and collation, the trunk features, the real-photo samples.
``--commands train evaluate`` attaches to ``reviewops evaluate`` processes as well (any reviewops command).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

RATE = 20


def watch(py_spy: Path, out: Path, commands: tuple[str, ...] = ("train",)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    env = {**os.environ, "PYTHONPATH": str(py_spy)}
    while True:
        found = subprocess.run(["pgrep", "-f", r"bin/reviewops (%s)( |$)" % "|".join(commands)], capture_output=True,
                               text=True).stdout.split()
        for pid in map(int, found):
            if pid in seen:
                continue
            seen.add(pid)
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            at = next((i for i, c in enumerate(cmd) if c.endswith("reviewops")), None)
            if at is None:                          # a shell whose command line names reviewops, not reviewops itself
                continue
            args = cmd[at + 1:]
            name = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(args)).strip("_")
            subprocess.Popen([str(py_spy / "bin" / "py-spy"), "record", "-p", str(pid), "--rate", str(RATE), "--nonblocking",
                              "--format", "raw", "-o", str(out / f"{name}.{pid}.txt")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)


def _function(frame: str) -> str:
    """``name (file.py:line)`` -> ``name (file.py)``: one entry per function, whatever its line."""
    return re.sub(r":\d+\)$", ")", frame)


def summarise(file: Path, top: int = 30) -> dict:
    total, inclusive, leaf = 0, collections.Counter(), collections.Counter()
    for line in file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        for f in {_function(f) for f in frames}:
            inclusive[f] += count
        leaf[_function(frames[-1])] += count
    boring = ("typer/", "click/", "<module>", "Module._call_impl", "Module._wrapped_call_impl", "cli.py")
    shares = {k: round(v / total, 4) for k, v in inclusive.most_common() if not any(b in k for b in boring)}
    return {"seconds_sampled": round(total / RATE, 1), "inclusive_share": dict(list(shares.items())[:top]),
            "leaf_share": {k: round(v / total, 4) for k, v in leaf.most_common(15)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--py-spy", type=Path, required=True, help="the --target folder py-spy was installed into")
    w.add_argument("--dir", type=Path, required=True)
    w.add_argument("--commands", nargs="+", default=["train"],
                   help="the reviewops commands to attach to (default train; e.g. train evaluate reviewer)")
    s = sub.add_parser("summarise")
    s.add_argument("files", type=Path, nargs="+")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--note", default="")
    args = ap.parse_args()
    if args.cmd == "watch":
        watch(args.py_spy, args.dir, tuple(args.commands))
        return
    doc = {"command": "python benchmarks/train_profile.py watch ... (during make demo or dvc repro), then summarise "
                      + " ".join(f.name for f in args.files),
           "date": datetime.now(UTC).strftime("%Y-%m-%d"), "note": args.note,
           "profiles": {f.name.rsplit(".", 2)[0]: summarise(f) for f in args.files}}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
