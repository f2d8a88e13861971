"""The monitored project: the trained tiny project gated into a BentoML store, with live traffic in its log.

Built once per session (``monitored`` and ``webhook``, declared in tests/conftest.py so that the drift
DAG test of tests/dags shares them):

1. A copy of ``trained_project``. The tiny profile caps every input at 96 px, where the blur model
   cannot see blur (Spearman 0.19 against the annotator score on 300 photos), so the blur family
   alone is retrained at its production input size (256 px, 6 epochs) on the same tiny data; and
   the reviewer serves two prohibited categories (cash, knife) so the ONNX export stays short.
2. `reviewops gate` (a real subprocess, BENTOML_HOME in the session's tmp): every family is
   registered and promoted; `reviewops reference` stores the drift reference of the validation split.
3. Generated traffic: 200 photos become the reference (`reviewops reference --batch`), 150
   unshifted photos are answered during the day before yesterday-to-yesterday window and 150 shifted
   ones (SHIFT: more blur, new SKUs) during the last day, through the service's code path
   (``pipelines.train.review.records``: ONNX bundles, ``decide``, ``log_record``), their
   photos archived by SHA-256 like the service does, and appended to the prediction log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

BIN = Path(sys.executable).parent
SHIFT = "blur_rate=0.8,new_sku_rate=0.5"
SIZES = {"ref": 200, "live": 150, "shifted": 150}
SEEDS = {"ref": 501, "live": 502, "shifted": 503}
CATEGORIES = ["cash", "knife"]


def cli(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "reviewops"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"reviewops {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


def _params(repo: Path, change) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    change(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _blur_at_full_size(trained: Path, base: Path, repo: Path) -> None:
    """Train and evaluate the blur family at 256 px in a side copy; move its model and metrics into ``repo``."""
    from pipelines.train.families import evaluate, train

    side = base / "blur256"
    shutil.copytree(trained, side, symlinks=True)
    # the tiny caps but the 96 px input and the 2 epochs (every other cap kept: real_samples at 2400 took 2 minutes)
    _params(side, lambda raw: raw["train"]["profiles"]["tiny"].update(image_size=None, max_epochs=6))
    train("blur", side)
    evaluate("blur", side)
    shutil.rmtree(repo / "models" / "blur")
    shutil.copytree(side / "models" / "blur", repo / "models" / "blur")
    shutil.copy2(side / "metrics" / "blur.json", repo / "metrics" / "blur.json")
    shutil.rmtree(side)


class Webhook:
    """A local HTTP endpoint that keeps what is POSTed to it (the alert webhook)."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append({"path": self.path, "content_type": self.headers.get("content-type"),
                                 "json": json.loads(body or b"null")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/drift"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Clock:
    """Seconds per fixture step (kept in monitoring/reports/figures/fixture_seconds.json by the false-alarm test)."""

    def __init__(self):
        self.laps, self.last = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 1)
        self.last = now


def production_bundles(home: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Family -> tag and family -> bundle directory of the production models in a BentoML home."""
    tags = json.loads((home / "reviewops" / "production.json").read_text())
    return tags, {f: home / "models" / t.split(":")[0] / t.split(":")[1] for f, t in tags.items()}


def manifest(batch: Path) -> pd.DataFrame:
    from pipelines.data.manifest import read_manifest

    df = read_manifest(batch)
    df["path"] = [str(batch / rel) for rel in df["image"]]
    return df


def monitored_project(trained_project: Path, base: Path, webhook: Webhook) -> dict:
    """The session's ``monitored`` project (tests/conftest.py: shared with tests/dags), built in ``base``."""
    from monitoring.prediction_log import PredictionLog, resolve_url
    from pipelines.train.review import records as review_records
    from pipelines.data.generate import generate_batch
    from pipelines.params import load_params
    from pipelines.serve.models import ReviewerModels

    repo = base / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    clock = Clock()
    _blur_at_full_size(trained_project, base, repo)
    clock.lap("blur family retrained at 256 px")

    def settings(raw):
        raw["prohibited"]["categories"] = CATEGORIES
        raw["monitoring"]["webhook_url"] = webhook.url

    _params(repo, settings)
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    for key in ("REVIEWOPS_PREDICTION_LOG", "REVIEWOPS_ALERT_WEBHOOK", "REVIEWOPS_PARAMS"):
        env.pop(key, None)
    gate = cli(repo, env, "gate")
    clock.lap("reviewops gate (5 families exported, registered, promoted)")
    validation_cli = cli(repo, env, "reference", "--source", "val")
    clock.lap("reviewops reference (validation split)")
    validation_reference = json.loads((repo / "monitoring" / "reference" / "reference.json").read_text())

    params = load_params(repo / "params.yaml")
    traffic = base / "traffic"
    for name, n in SIZES.items():
        generate_batch(traffic, name, n, SEEDS[name], params, _shift(name), workers=2)
    clock.lap("500 photos generated")
    reference = cli(repo, env, "reference", "--batch", str(traffic / "ref"))
    clock.lap("reviewops reference --batch (200 photos)")

    tags, bundles = production_bundles(base / "bentoml")
    models = ReviewerModels(bundles, threads=2)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    log = PredictionLog(resolve_url(params.serving.prediction_log, repo))
    frames = {}
    for name, day in (("live", 2), ("shifted", 1)):      # answered during [now - day, now - day + 1d)
        df = manifest(traffic / name)
        step = dt.timedelta(days=1) / (len(df) + 1)
        ts = [now - dt.timedelta(days=day) + step * (i + 1) for i in range(len(df))]
        records = review_records(models, tags, df, params, request_prefix=f"{name}-", ts=ts,
                                 archive=repo / params.serving.photo_archive)
        log.append(records)
        frames[name] = df
    log.close()
    clock.lap("300 live answers logged")
    return {"timings": clock.laps, "repo": repo, "env": env, "base": base, "now": now, "traffic": traffic, "gate": gate.stdout,
            "validation_reference": validation_reference, "validation_reference_cli": validation_cli.stdout,
            "reference_cli": reference.stdout, "tags": tags,
            "bundles": bundles, "manifests": frames, "webhook": webhook}


@pytest.fixture(scope="session")
def drift_runs(monitored):
    """`reviewops drift` over the unshifted day (ending yesterday) and the shifted day (ending now)."""
    repo, env, now = monitored["repo"], monitored["env"], monitored["now"]
    quiet = cli(repo, env, "drift", "--window", "1d", "--until", (now - dt.timedelta(days=1)).isoformat())
    shifted = cli(repo, env, "drift", "--window", "1d", "--until", now.isoformat(), "--fail-on-drift", check=False)
    reports = sorted((repo / "monitoring" / "reports").glob("*/drift-*.json"))
    docs = [json.loads(p.read_text()) for p in reports]
    by_until = {d["reviewops"]["until"]: d for d in docs}
    return {"quiet": quiet, "shifted": shifted, "webhook": monitored["webhook"],
            "quiet_doc": by_until[(now - dt.timedelta(days=1)).isoformat()], "shifted_doc": by_until[now.isoformat()]}


@pytest.fixture(scope="session")
def fp_runs(monitored):
    """Simulated reviewer verdicts (from the generator's labels) for both streams, one hand-made miss, `reviewops fp-report`."""
    repo, env, now = monitored["repo"], monitored["env"], monitored["now"]
    simulated = [cli(repo, env, "feedback", "--simulate", str(monitored["traffic"] / name)) for name in ("live", "shifted")]
    from monitoring.feedback import CHECKS
    from monitoring.prediction_log import PredictionLog, resolve_url
    from pipelines.params import load_params

    log = PredictionLog(resolve_url(load_params(repo / "params.yaml").serving.prediction_log, repo))
    first = log.read().iloc[0]
    log.close()
    missed = next(c for c in CHECKS if c not in first["reasons"] and c not in ("sku_mismatch", "unknown_sku"))
    hand = monitored["base"] / "after_sales.csv"
    hand.write_text(f"listing_id,check,verdict,note\n{first['listing_id']},{missed},missed,buyer complaint #4411\n")
    imported = cli(repo, env, "feedback", str(hand))
    report = cli(repo, env, "fp-report", "--days", "3", "--until", now.isoformat())
    docs = sorted((repo / "monitoring" / "reports").glob("*/fp-report-*.json"))
    return {"simulated": simulated, "imported": imported, "miss": (first["listing_id"], missed), "report": report, "doc": json.loads(docs[-1].read_text()), "html": docs[-1].with_suffix(".html")}


def _shift(name: str) -> dict | None:
    from pipelines.data.generate import parse_shift

    return parse_shift(SHIFT) if name == "shifted" else None
