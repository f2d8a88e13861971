"""Two reviewer replicas behind haproxy, one PostgreSQL prediction log: 10,000 answers at concurrency 32.

    # trains the tiny project, gates and builds the Bento in a scratch directory (minutes), then the run:
    python benchmarks/scaleout_replicas.py
    # or reuse a prepared Bento (tests/scaleout/replicas.py Built.save) and a scratch directory:
    python benchmarks/scaleout_replicas.py --built /tmp/rops-dev/built.json --n 10000 --concurrency 32

What runs, all on loopback: Debian's PostgreSQL 15 (tests/scaleout/services.py), two ``bentoml serve`` replicas of
the Bento (each with its own BENTOML_HOME view, both with REVIEWOPS_PREDICTION_LOG on one database), haproxy with
``deploy/haproxy.cfg``. ``--n`` POST /review through haproxy at ``--concurrency`` (photos of a generated batch
that is not in the versioned data, cycled). Then: answers per replica (X-Served-By and haproxy's counters), the
latency percentiles, and the log against the answers: rows lost (a 200 answer without its row), duplicated (a
request id twice), without an answer. Then the simulated reviewers' feedback is POSTed through haproxy and the drift
report, the false-positive report and an active-learning queue are computed from the PostgreSQL log and from a
SQLite copy of the same rows; ``monitors_equal`` says whether they agree.

Writes benchmarks/results/scaleout_replicas.json (with the command that made it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "scaleout_replicas.json"


def prepare(base: Path):
    from tests.conftest import make_project, tiny_gate_params, train_all
    from tests.scaleout.replicas import prepare_bento

    repo = make_project(base / "tiny")
    tiny_gate_params(repo)
    train_all(repo)
    built = prepare_bento(repo, base / "built")
    built.save(base / "built.json")
    return built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--built", type=Path, help="a prepared Bento's built.json (default: train and build one)")
    ap.add_argument("--base", type=Path, help="scratch directory (default: a new temporary one)")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=1800)
    ap.add_argument("--log", choices=("postgres", "sqlite"), default="postgres",
                    help="the shared prediction log: one PostgreSQL database (default), or one SQLite file (a control "
                         "run without PostgreSQL; no comparison of the monitors then)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from monitoring.prediction_log import PredictionLog
    from pipelines.data.manifest import read_manifest
    from pipelines.params import load_params
    from tests.scaleout.replicas import (Built, copy_to_sqlite, feedback_payloads, load, reports_from, start_stack,
                                         traffic_photos)
    from tests.scaleout.services import start_postgres

    base = args.base or Path(tempfile.mkdtemp(prefix="scaleout-replicas-"))
    base.mkdir(parents=True, exist_ok=True)
    t_prepare = time.monotonic()
    built = Built.load(args.built) if args.built else prepare(base)
    prepare_s = time.monotonic() - t_prepare
    pg = start_postgres() if args.log == "postgres" else None
    stack = None
    try:
        run_dir = base / f"run-{time.strftime('%Y%m%dT%H%M%S')}"
        url = pg.create_database("bench") if pg else f"sqlite:///{run_dir / 'predictions.sqlite'}"
        t0 = time.monotonic()
        stack = start_stack(built, run_dir, url)
        up_s = time.monotonic() - t0
        photos = traffic_photos(built.traffic)
        load(stack.haproxy.url, photos, 2 * args.concurrency, args.concurrency, 120)     # warm-up, not counted
        log = PredictionLog(url)
        warm_ids = set(log.read()["request_id"])
        log.close()
        t1 = time.monotonic()
        answers = load(stack.haproxy.url, photos, args.n, args.concurrency, args.max_seconds)
        load_s = time.monotonic() - t1
        last_200 = max((a.ended for a in answers if a.status == 200), default=t1) - t1   # without a hung tail
        stats = stack.haproxy.stats()

        ok = [a for a in answers if a.status == 200]
        log = PredictionLog(url)
        rows = log.read()
        log.close()
        rows = rows[~rows["request_id"].isin(warm_ids)]
        counts = Counter(rows["request_id"])
        answered = Counter(a.request_id for a in ok)
        lat = np.array([a.ended - a.started for a in ok]) * 1000

        params = load_params(built.repo / "params.yaml")
        payloads = feedback_payloads(rows, read_manifest(built.traffic), list(params.prohibited.categories))
        stored = 0
        with httpx.Client(base_url=stack.haproxy.url, timeout=60, trust_env=False) as client:
            for i in range(0, len(payloads), 10):
                r = client.post("/feedback", json=payloads[i:i + 10])
                r.raise_for_status()
                stored += r.json()["stored"]
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
        category = params.prohibited.categories[0]
        t2 = time.monotonic()
        on_pg = reports_from(built.repo, url, until, category, "bench-pg")
        if pg:
            sqlite_url = f"sqlite:///{run_dir / 'sqlite-copy' / 'predictions.sqlite'}"     # a new file each run
            copied = copy_to_sqlite(url, sqlite_url)
            on_sqlite = reports_from(built.repo, sqlite_url, until, category, "bench-sqlite")
        else:
            copied, on_sqlite = None, None
        monitors_s = time.monotonic() - t2

        result = {
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "setup": {"replicas": 2, "front": "haproxy 2.6, deploy/haproxy.cfg",
                      "log": "PostgreSQL 15 (one database)" if pg else "SQLite (one WAL file, both replicas)",
                      "bento": built.tag, "photos_cycled": len(photos)},
            "n": args.n, "concurrency": args.concurrency,
            "sent": len(answers), "answered_200": len(ok),
            "failed": dict(Counter(a.status for a in answers if a.status != 200)),
            "seconds": round(load_s, 1), "answers_per_s": round(len(ok) / load_s, 2),
            "seconds_to_last_200": round(last_200, 1), "answers_per_s_to_last_200": round(len(ok) / last_200, 2),
            "failed_detail": [{"status": a.status, "served_by": a.server, "seconds": round(a.ended - a.started, 1),
                               "error": (a.error or "")[:160]} for a in answers if a.status != 200],
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 90, 99)} if len(lat) else {},
            "served_by": dict(Counter(a.server for a in ok)),
            "haproxy": {s: {k: int(stats[s][k] or 0) for k in ("stot", "hrsp_2xx", "hrsp_5xx", "wretr", "wredis")}
                        for s in ("r1", "r2")},
            "log": {"rows": len(rows), "lost": len(set(answered) - set(counts)),
                    "duplicated": sum(1 for c in counts.values() if c > 1),
                    "without_answer": len(set(counts) - set(answered)),
                    "answer_ids_unique": max(answered.values(), default=1) == 1},
            "feedback_rows_stored": stored, "copied_to_sqlite": copied,
            "monitors_equal": {k: on_pg[k] == on_sqlite[k] for k in ("drift", "fp", "queue", "picked")} if pg else None,
            "drift": {"status": on_pg["drift"]["status"], "rows": on_pg["drift"]["rows"],
                      "trigger_scores": {c["column"]: c["score"] for c in on_pg["drift"]["columns"] if c["trigger"]}},
            "fp_checks": [{k: c[k] for k in ("check", "flagged", "reviewed", "false_positives")}
                          for c in on_pg["fp"]["checks"]],
            "queue": {"size": on_pg["queue"]["size"], "scored": on_pg["queue"]["scored"]},
            "timings_s": {"prepare": round(prepare_s, 1), "stack_up": round(up_s, 1), "load": round(load_s, 1),
                          "monitors_both": round(monitors_s, 1)},
        }
    finally:
        if stack is not None:
            stack.close()
        if pg:
            pg.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
