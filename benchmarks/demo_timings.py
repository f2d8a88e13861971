"""Read the log of a default-size `make demo` into benchmarks/results/make_demo_default.json.

Usage, in a fresh clone (the demo versions data and trains in the work tree it runs in):

    git clone <this repo> /tmp/reviewops && cd /tmp/reviewops
    start=$(date +%s); make demo > demo.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - start ))" >> demo.log
    .venv/bin/python benchmarks/demo_timings.py demo.log

Nothing is measured here: it copies what the demo printed (its stage summary, the seconds of every
Airflow task, the live-traffic lines, the drift verdicts, the runs queued by asset events) and the
wall time of the whole command, install included, from the ``rc=... secs=...`` line.

``--partial`` reads a demo that stopped before its summary (a refused gate, say): the seconds each
finished stage printed, the Airflow tasks, and the gate's verdict per family.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
from pathlib import Path

OUT = Path(__file__).parent / "results" / "make_demo_default.json"

STAGE = re.compile(r"^\s+([\d.]+) s  (.+)$")
TASK = re.compile(r"\] task (\S+) done in ([\d.]+) s")
DAG = re.compile(r"airflow dags test (\S+)")
TRAFFIC = re.compile(r"^\s+(\d+) photos, (\d+) errors, decisions (\{.*\}), latency p50 ([\d.]+) ms, p95 ([\d.]+) ms")
VERDICT = re.compile(r"^\s+(drift, [\w-]+|runs queued, [\w-]+|curl answered|auto-pass, [\w-]+):\s+(.*)$")
INSTALL = re.compile(r"^>> install took (\d+) s")
END = re.compile(r"^rc=(\d+) secs=(\d+)")
STAGE_DONE = re.compile(r"^    (\S.*): ([\d.]+) s$")
VERDICT_GATE = re.compile(r"^\s+(sku|blur|detector|prohibited|manipulation)\s+(PROMOTED|REFUSED|UNCHANGED)\b")


def parse(text: str, partial: bool = False) -> dict:
    lines = text.replace("\r", "\n").splitlines()
    out: dict = {"stages_seconds": {}, "tasks_seconds": {}, "traffic": [], "verdicts": {}}
    dag, in_summary = None, False
    for line in lines:
        if partial and (m := STAGE_DONE.match(line)) and not line.startswith("     "):
            out["stages_seconds"][m.group(1)] = float(m.group(2))
        if partial and (m := VERDICT_GATE.match(line)):
            out["verdicts"][f"gate, {m.group(1)}"] = m.group(2)
        if line.startswith("ReviewOps demo done"):
            in_summary = True
            continue
        if in_summary and (m := STAGE.match(line)):
            out["stages_seconds"][m.group(2)] = float(m.group(1))
            continue
        if (m := DAG.search(line)):
            dag, n = m.group(1), 2
            while dag in out["tasks_seconds"]:          # a DAG run twice (drift): drift, drift#2
                dag, n = f"{m.group(1)}#{n}", n + 1
            out["tasks_seconds"][dag] = {}
        elif line.startswith("==> "):
            dag = None
        if dag and (m := TASK.search(line)):
            out["tasks_seconds"][dag][m.group(1)] = float(m.group(2))
        elif (m := TRAFFIC.match(line)):
            out["traffic"].append({"photos": int(m.group(1)), "errors": int(m.group(2)),
                                   "decisions": json.loads(m.group(3).replace("'", '"')),
                                   "p50_ms": float(m.group(4)), "p95_ms": float(m.group(5))})
        elif in_summary and (m := VERDICT.match(line)):
            out["verdicts"][m.group(1)] = m.group(2)
        elif (m := INSTALL.match(line)):
            out["install_seconds"] = int(m.group(1))
        elif (m := END.match(line)):
            out["exit_code"], out["wall_seconds_with_install"] = int(m.group(1)), int(m.group(2))
    if not out["stages_seconds"]:
        raise SystemExit("no 'ReviewOps demo done' summary in the log: the demo did not finish "
                         "(--partial reads what it did)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--partial", action="store_true", help="the demo stopped before its summary")
    ap.add_argument("--note", default=None, help="what this run was (stored with it)")
    args = ap.parse_args()
    if not args.log.is_file():
        raise SystemExit(f"no log at {args.log}: pass the file that `make demo > FILE 2>&1` wrote")
    record = {"command": "make demo  (fresh clone; then: python benchmarks/demo_timings.py demo.log"
                         + (" --partial)" if args.partial else ")"),
              **({"note": args.note} if args.note else {}),
              **parse(args.log.read_text(errors="replace"), partial=args.partial),
              "machine": {"cpus": os.cpu_count()},
              "date": datetime.date.today().isoformat()}
    train = record["tasks_seconds"].get("retrain", {})
    record["retrain_breakdown_seconds"] = {
        "train": round(sum(v for k, v in train.items() if k.startswith("train[")), 1),
        "evaluate": round(sum(v for k, v in train.items() if k.startswith("evaluate[")), 1),
        **{k: v for k, v in train.items() if not k.startswith(("train[", "evaluate["))}}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("stages_seconds", "retrain_breakdown_seconds")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
