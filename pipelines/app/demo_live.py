"""The live half of `make demo`, after deploy: traffic to ``POST /review``, simulated manual reviews,
what the reports found, and the closing summary (the driver of the stages is :mod:`pipelines.app.demo`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pipelines.app.project import BIN
from pipelines.params import load_params

if TYPE_CHECKING:
    from pipelines.app.demo import Demo


# ---------------------------------------------------------------- live traffic and simulated reviews

def traffic_batch(work: Path, name: str, n: int, seed: int, shift: dict[str, str] | None) -> Path:
    """A generated stream of listing photos under ``.reviewops/traffic/`` (never data/incoming: not training data)."""
    from pipelines.data.generate import generate_batch

    out = work / ".reviewops" / "traffic"
    if (out / name).is_dir():
        return out / name
    return generate_batch(out, name, n, seed, load_params(work / "params.yaml"), shift, progress=True)


def _field(value) -> str | None:
    return value if isinstance(value, str) and value and value != "none" else None


def send_traffic(url: str, batch_dir: Path) -> dict:
    """POST every photo of ``batch_dir`` to ``url/review`` with its claimed SKU, category and listing id."""
    import httpx
    from tqdm import tqdm

    from pipelines.data.manifest import read_manifest

    df = read_manifest(batch_dir)
    decisions: dict[str, int] = {}
    latencies, errors = [], 0
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
        for _, row in tqdm(list(df.iterrows()), desc=f"POST /review {batch_dir.name}", unit="photo"):
            data = {k: v for k, v in (("sku_id", _field(row.get("claimed_sku"))), ("category", _field(row.get("category"))),
                                      ("listing_id", str(row["listing_id"]))) if v}
            start = time.perf_counter()
            resp = client.post("/review", data=data, files={"photo": (Path(row["image"]).name,
                                                                      (batch_dir / row["image"]).read_bytes(), "image/jpeg")})
            latencies.append(time.perf_counter() - start)
            if resp.status_code != 200:
                errors += 1
                continue
            decision = resp.json()["decision"]
            decisions[decision] = decisions.get(decision, 0) + 1
    latencies.sort()
    return {"photos": len(df), "errors": errors, "decisions": decisions,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None}


def simulate_reviews(work: Path, streams: list[Path]) -> int:
    """Manual-review outcomes (and after-sales misses) of the streams' answers from the generator's truth."""
    import pandas as pd

    from monitoring.feedback import FeedbackStore, import_csv, simulate_feedback, store_url
    from monitoring.prediction_log import PredictionLog

    from pipelines.data.manifest import read_manifest

    params = load_params(work / "params.yaml")
    log, store = PredictionLog(store_url(work, params)), FeedbackStore(store_url(work, params))
    try:
        predictions, done = log.read(), set(store.read()["listing_id"])
    finally:
        log.close()
        store.close()
    predictions = predictions[~predictions["listing_id"].isin(done)]       # a second demo run reviews nothing twice
    manifest = pd.concat([read_manifest(s) for s in streams], ignore_index=True)
    rows = simulate_feedback(manifest, predictions, params.prohibited.categories, seed=params.seed)
    if rows.empty:
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        rows.to_csv(fh, index=False)
    try:
        return import_csv(work, fh.name, params, source="demo-simulated")
    finally:
        os.unlink(fh.name)


# ---------------------------------------------------------------- what the reports found

def describe_drift(work: Path) -> str:
    """The verdict of the newest drift report and where it is."""
    path = find_latest(work, "drift-*.json")
    if path is None:
        return "no drift report written"
    verdict = json.loads(path.read_text()).get("reviewops", {})
    return f"{str(verdict.get('status', '?')).upper()}: {verdict.get('message', '')}\n{'':18s}{path.with_suffix('.html')}"


_QUEUED = ("from pipelines.app.asset_queue import queued_asset_runs\n"
           "print('\\n'.join(f'{dag} <- {uri}' for dag, uri in queued_asset_runs()))")


def describe_queue(demo: Demo) -> str:
    """DAG runs that asset events queued for Airflow's scheduler (``dags test`` runs no scheduler)."""
    done = subprocess.run([sys.executable, "-c", _QUEUED], cwd=demo.work, env=demo.env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        return f"could not read Airflow's asset queue: {done.stderr.strip()[-300:]}"
    queued = [line for line in done.stdout.splitlines() if line.strip()]
    if not queued:
        return "none (no asset event waits for a DAG)"
    return "; ".join(queued) + " (the scheduler of `airflow standalone` starts them)"


def find_latest(work: Path, pattern: str) -> Path | None:
    """The newest report under ``<work>/monitoring/`` whose name matches ``pattern``."""
    found = sorted((work / "monitoring").rglob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# ---------------------------------------------------------------- the summary

def _curl(demo: Demo) -> str:
    """A curl line for one photo of the demo batch, run once to show that it works."""
    from pipelines.data.manifest import read_manifest

    batch_dir = demo.work / "data" / "batches" / demo.batch
    row = read_manifest(batch_dir).iloc[0]
    sku = _field(row.get("claimed_sku"))
    line = (f"curl -s -F photo=@{batch_dir / row['image']}" + (f" -F sku_id={sku}" if sku else "")
            + f" -F listing_id=L1 http://127.0.0.1:{demo.port}/review")
    if shutil.which("curl"):
        out = subprocess.run(line.split(), capture_output=True, text=True, timeout=60).stdout
        try:
            answer = json.loads(out)
            demo.notes["curl answered"] = f"{answer['decision']} {answer['reasons']}"
        except (ValueError, KeyError):
            demo.notes["curl answered"] = f"unexpected: {out[:200]}"
    return line


def metric_lines(repo: Path) -> list[str]:
    """One line per family from metrics/<family>.json: the figures on the frozen test split."""
    from pipelines.train.evaluate import read_metrics
    from pipelines.train.families import FAMILIES, get

    lines = []
    for family in FAMILIES:
        try:
            m = read_metrics(family, repo)
            lines.append(f"    {family:<13}{get(family).summary(m['test'])}  (trained in {m['train_seconds']:.0f} s)")
        except (FileNotFoundError, KeyError, TypeError):
            continue
    from pipelines.release.reviewer import METRICS_FILE, summary

    path = repo / METRICS_FILE
    if path.is_file():                      # the whole reviewer: what the marketplace gets
        lines += [f"    reviewer     {line}" for line in summary(json.loads(path.read_text())).splitlines()]
    from pipelines.release import real_photos

    path = repo / real_photos.METRICS_FILE
    if path.is_file():                      # the candidates on real photos nothing trained on
        lines.append(f"    real photos  {real_photos.summary(json.loads(path.read_text()))}")
    return lines


def print_summary(demo: Demo, train: bool, total: float) -> None:
    """The seconds of every stage, then where everything is: data, models, reports, the endpoint, Airflow."""
    typer.secho("\nReviewOps demo done", bold=True)
    for name, seconds in demo.timings.items():
        typer.echo(f"  {seconds:7.1f} s  {name}")
    typer.echo(f"  {total:7.1f} s  total")
    w = demo.work
    typer.echo(f"\n  workspace:      {w}")
    typer.echo(f"  versioned data: {w / 'data' / 'batches' / demo.batch} (pointer {demo.batch}.dvc; dvc status, dvc pull)")
    if train:
        build = json.loads((w / "reports" / "build.json").read_text()) if (w / "reports" / "build.json").exists() else {}
        typer.echo(f"  models:         {', '.join(f'{f} {t}' for f, t in sorted(build.get('models', {}).items()))}")
        typer.echo(f"  gate reports:   {w / 'reports' / 'gate'}/<family>.md;  metrics: dvc metrics show;  plots: dvc plots show")
        for line in metric_lines(w):
            typer.echo(line)
        typer.echo(f"  Bento:          {build.get('bento')}  (BENTOML_HOME={w / '.bentoml'})")
        typer.echo(f"  endpoint:       http://127.0.0.1:{demo.port}/review  (also /review_batch, /healthz, /readyz, "
                   f"/metrics, /models)")
        typer.echo(f"  try it:         {_curl(demo)}")
        if "curl answered" in demo.notes:
            typer.echo(f"  curl answered:  {demo.notes.pop('curl answered')}")
        for name, note in demo.notes.items():
            typer.echo(f"  {name + ':':15s} {note}")
        typer.echo(f"  stop serving:   {BIN / 'python'} -c \"from pipelines.deploy.bluegreen import stop_all; "
                   f"print(stop_all('{w / '.reviewops' / 'deploy'}'))\"")
    e = demo.env
    typer.echo(f"  Airflow UI:     {'make airflow-ui   # or: ' if w == demo.project else ''}"
               f"PATH={BIN}:$PATH AIRFLOW_HOME={e['AIRFLOW_HOME']} AIRFLOW__CORE__DAGS_FOLDER="
               f"{e['AIRFLOW__CORE__DAGS_FOLDER']} AIRFLOW__CORE__LOAD_EXAMPLES=False REVIEWOPS_ROOT={w} "
               f"BENTOML_HOME={e['BENTOML_HOME']} airflow standalone")
    typer.echo(f"                  then http://localhost:8080, user admin, password in "
               f"{e['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated; retrain is unpaused, "
               f"the other DAGs start paused (unpause ingest, deploy, drift, fp_report to let their schedules and "
               f"asset events run them)")
    typer.echo(f"  Airflow logs:   {demo.logs}")
