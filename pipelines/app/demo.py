"""`make demo`: the platform end to end through Airflow on this machine, with the time of every stage.

1. migrate Airflow's database (SQLite in ``<workspace>/.airflow``);
2. generate the demo batch into ``data/incoming/`` (the ``demo`` or ``tiny`` profile of params.yaml);
3. ``airflow dags test ingest`` (validate, version), ``retrain`` (dvc repro per family, evaluate, gate,
   register, build the Bento) and ``deploy`` (blue/green behind the router, golden smoke set);
4. live traffic to ``POST /review``: a normal generated stream, then a shifted one (more blur, dark
   lighting, new SKUs), each followed by the ``drift`` DAG over that stream's window;
5. simulated manual-review outcomes of the flagged photos (the generator's ground truth), then the
   ``fp_report`` DAG;
6. where everything is: the endpoint and a curl line that was just run, the reports, the Airflow UI.

The ``demo`` profile runs in this work tree (it versions the batch and commits the data pointer, as
a data change would: run it in a clone to keep a branch clean). The ``tiny`` profile (96 photos,
the tiny training profile, gate floors at 0 because 19 test photos leave most checks without a
positive) runs in its own workspace, by default ``$TMPDIR/reviewops-demo-tiny``: a copy of this
tree's files with its own git, DVC remote, model store and Airflow database. A second run reuses
what is there: the batch is versioned, nothing is retrained, the deployed Bento stays.

    python -m pipelines.app.demo --profile tiny          # or: make demo DEMO_PROFILE=tiny
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer
import yaml

from pipelines.params import load_params

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHIFT = "blur_rate=0.6,lighting=dark,new_sku_rate=0.3"
TRAFFIC = {"demo": 150, "tiny": 100}          # photos per live stream: > monitoring.min_rows; drift_false_alarms.json: 100-row windows suffice
LEAVE_OUT = ("data/", "dvc.lock", "models/", "metrics/", "plots/", "reports/", ".dvc/config.local")


class DemoError(RuntimeError):
    pass


@dataclass
class Demo:
    project: Path                     # this checkout: dags/ and the installed code
    work: Path                        # the project the DAGs run on (REVIEWOPS_ROOT)
    profile: str
    batch: str
    port: int
    env: dict[str, str]
    logs: Path
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@contextmanager
def stage(name: str, timings: dict[str, float]):
    typer.secho(f"\n==> {name}", bold=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - start
        typer.echo(f"    {name}: {timings[name]:.1f} s")


# ---------------------------------------------------------------- workspace and Airflow

def _tree_files(project: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=project, capture_output=True, text=True)
    if out.returncode != 0:
        raise DemoError(f"git ls-files failed in {project}: {out.stderr.strip()}")
    return [f for f in out.stdout.splitlines() if f and not f.startswith(LEAVE_OUT) and (project / f).is_file()]


def prepare_workspace(project: Path, work: Path, profile: str) -> None:
    """A copy of this tree's source files (no data, models or state) as a fresh git repo; tiny params for tiny."""
    for rel in _tree_files(project):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, work / rel)
    if profile == "tiny":
        raw = yaml.safe_load((work / "params.yaml").read_text())
        raw["train"]["profile"] = "tiny"
        raw["gate"]["allow_unmeasured"] = True
        raw["gate"]["recall_floors"] = {k: 0.0 for k in raw["gate"]["recall_floors"]}
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=ReviewOps demo", "-c", "user.email=demo@reviewops.invalid", "commit", "-q",
                 "-m", f"ReviewOps demo workspace ({profile} profile)"]):
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise DemoError(f"{' '.join(cmd)} failed in {work}: {done.stderr.strip()}")
    for key in ("user.name", "user.email"):
        subprocess.run(["git", "config", key, "ReviewOps demo" if key == "user.name" else "demo@reviewops.invalid"],
                       cwd=work, check=True)


def airflow_env(project: Path, work: Path) -> dict[str, str]:
    """Airflow with SQLite in the workspace, the workspace's dags/, examples off; the project's stores."""
    in_tree = work == project
    home = os.environ.get("AIRFLOW_HOME") if in_tree and os.environ.get("AIRFLOW_HOME") else str(work / ".airflow")
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "REVIEWOPS_ROOT": str(work),
           "BENTOML_HOME": str(work / ".bentoml"), "BENTOML_DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    if not in_tree:
        env.pop("REVIEWOPS_DVC_REMOTE", None)
    for key in ("REVIEWOPS_PARAMS", "REVIEWOPS_PREDICTION_LOG"):
        env.pop(key, None)
    return env


_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[\s*(\w+)\s*\] ")
_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
_QUIET = ("XCom not found", "graphviz", "GitWildMatchPattern", "deprecated")
_CONTINUATION = re.compile(r"\] loc=\S+:\d+$")      # the tail of a multi-line Airflow log record


def run_dag(demo: Demo, dag_id: str, conf: dict | None = None) -> bool:
    """``airflow dags test DAG_ID`` with its log in ``<logs>/<dag>.log``; echoes task starts, task output and errors."""
    log_path = demo.logs / f"{dag_id}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    cmd = [str(BIN / "airflow"), "dags", "test", dag_id, *(["-c", json.dumps(conf)] if conf else [])]
    typer.echo(f"    $ {' '.join(cmd)}\n    (full Airflow log: {log_path})")
    started, tasks = time.perf_counter(), {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=demo.work, env=demo.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip()
            stamp = _STAMP.match(line)
            if (m := _START.search(line)):
                key = m.group(1) + ("" if m.group(2) == "-1" else f"[{m.group(2)}]")
                tasks[key] = time.perf_counter()
                typer.secho(f"    [{time.perf_counter() - started:6.0f} s] task {key}", fg=typer.colors.CYAN)
            elif (m := _END.search(line)):
                key = m.group(1) + ("" if m.group(2) == "-1" else f"[{m.group(2)}]")
                if key in tasks:
                    typer.echo(f"    [{time.perf_counter() - started:6.0f} s] task {key} done in "
                               f"{time.perf_counter() - tasks[key]:.1f} s")
            elif "Skipping task." in line:
                reason = re.search(r"reason='([^']*)'", line)
                typer.echo(f"      skipped: {reason.group(1) if reason else 'see the log'}")
            elif "DagRun Finished" in line:
                state = re.search(r"state=(\w+)", line)
                typer.echo(f"    dag run {dag_id}: {state.group(1) if state else '?'}")
            elif stamp is None:                                    # what the task printed (and tracebacks)
                if line.strip() and not _CONTINUATION.search(line) and not any(q in line for q in _QUIET):
                    typer.echo(f"      {line}")
            elif stamp.group(1) in ("error", "critical") and not any(q in line for q in _QUIET):
                typer.secho(f"      {line[:400]}", fg=typer.colors.RED)
        code = proc.wait()
    if code != 0:
        typer.secho(f"    the {dag_id} DAG run failed (exit {code}); log {log_path}", fg=typer.colors.RED)
    return code == 0


# ---------------------------------------------------------------- live traffic and simulated reviews

def traffic_batch(work: Path, name: str, n: int, seed: int, shift: str | None) -> Path:
    """A generated stream of listing photos under ``.reviewops/traffic/`` (never data/incoming: not training data)."""
    from pipelines.data.generate import generate_batch, parse_shift

    out = work / ".reviewops" / "traffic"
    if (out / name).is_dir():
        return out / name
    return generate_batch(out, name, n, seed, load_params(work / "params.yaml"), parse_shift(shift), progress=True)


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


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _window(seconds: float) -> str:
    """A drift window (whole minutes) covering the last ``seconds``."""
    return f"{max(1, math.ceil(seconds / 60))}m"


def _drift_note(work: Path) -> str:
    """The verdict of the newest drift report and where it is."""
    path = _latest(work, "drift-*.json")
    if path is None:
        return "no drift report written"
    verdict = json.loads(path.read_text()).get("reviewops", {})
    return f"{str(verdict.get('status', '?')).upper()}: {verdict.get('message', '')}\n{'':18s}{path.with_suffix('.html')}"


_QUEUED = ("from pipelines.app.tasks import queued_asset_runs\n"
           "print('\\n'.join(f'{dag} <- {uri}' for dag, uri in queued_asset_runs()))")


def _queued_runs(demo: Demo) -> str:
    """DAG runs that asset events queued for Airflow's scheduler (``dags test`` runs no scheduler)."""
    done = subprocess.run([sys.executable, "-c", _QUEUED], cwd=demo.work, env=demo.env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        return f"could not read Airflow's asset queue: {done.stderr.strip()[-300:]}"
    queued = [line for line in done.stdout.splitlines() if line.strip()]
    if not queued:
        return "none (no asset event waits for a DAG)"
    return "; ".join(queued) + " (the scheduler of `airflow standalone` starts them)"


def _latest(work: Path, pattern: str) -> Path | None:
    found = sorted((work / "monitoring").rglob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# ---------------------------------------------------------------- the demo

def _workspace(project: Path, profile: str, workdir: Path | None, fresh: bool) -> Path:
    if workdir is None:
        workdir = project if profile == "demo" else Path(tempfile.gettempdir()) / f"reviewops-demo-{profile}"
    work = workdir.resolve()
    if work == project and profile != "demo":
        raise DemoError(f"the {profile} profile changes params.yaml, so it runs in its own workspace: "
                        f"pass --workdir (default {Path(tempfile.gettempdir()) / f'reviewops-demo-{profile}'})")
    if work != project and fresh and work.exists():
        from pipelines.deploy.bluegreen import stop_all

        stop_all(work / ".reviewops" / "deploy")
        shutil.rmtree(work)
    return work


def run_demo(batch: str = "demo-b1", profile: str = "demo", repo: Path | None = None, train: bool = True,
             workdir: Path | None = None, port: int | None = None, traffic: int | None = None,
             fresh: bool = False) -> int:
    """The main job end to end through Airflow; 0 on success (see the module doc)."""
    project = (repo or Path.cwd()).resolve()
    params = load_params(project / "params.yaml")
    if profile not in params.data.profiles:
        typer.secho(f"unknown profile {profile!r}; params.yaml has {sorted(params.data.profiles)}", fg=typer.colors.RED)
        return 2
    try:
        work = _workspace(project, profile, workdir, fresh)
    except DemoError as exc:
        typer.secho(str(exc), fg=typer.colors.RED)
        return 2
    timings: dict[str, float] = {}
    started = time.perf_counter()
    typer.secho(f"ReviewOps demo: profile {profile}, workspace {work}", bold=True)
    if work != project and not (work / ".git").is_dir():
        with stage(f"prepare the workspace {work} (a copy of this tree's source files, its own git)", timings):
            work.mkdir(parents=True, exist_ok=True)
            prepare_workspace(project, work, profile)
    wparams = load_params(work / "params.yaml")
    demo = Demo(project, work, profile, batch, int(port or wparams.serving.port), airflow_env(project, work),
                Path(airflow_env(project, work)["AIRFLOW_HOME"]) / "demo-logs", timings)
    demo.logs.mkdir(parents=True, exist_ok=True)

    with stage(f"migrate Airflow's database ({demo.env['AIRFLOW_HOME']}, SQLite)", timings):
        done = subprocess.run([str(BIN / "airflow"), "db", "migrate"], cwd=work, env=demo.env, capture_output=True, text=True)
        if done.returncode != 0:
            typer.secho(done.stdout[-3000:] + done.stderr[-3000:], fg=typer.colors.RED)
            return 1
        typer.echo("    " + (done.stdout.strip().splitlines() or ["migrated"])[-1][-200:])

    prof = wparams.data.profiles[profile]
    incoming, versioned = work / "data" / "incoming" / batch, work / "data" / "batches" / batch
    with stage(f"generate the demo batch: {prof.n} photos (seed {prof.seed}) into data/incoming/{batch}", timings):
        if versioned.exists():
            typer.echo(f"    {batch} is already versioned at {versioned}: ingest will find nothing new to version")
        elif incoming.exists():
            typer.echo(f"    {incoming} exists: reusing it")
        else:
            from pipelines.data.generate import generate_batch

            generate_batch(incoming.parent, batch, prof.n, prof.seed, wparams, progress=True)

    flows = [("ingest", {"batch": batch}, "ingest through Airflow: validate (Great Expectations), version (DVC)")]
    if train:
        flows += [("retrain", None, "retrain through Airflow: dvc repro per family, evaluate, gate, register, build"),
                  ("deploy", {"port": demo.port}, f"deploy through Airflow: blue/green on 127.0.0.1:{demo.port}, smoke set")]
    for dag_id, conf, title in flows:
        with stage(title, timings):
            ok = run_dag(demo, dag_id, conf)
        if not ok:
            typer.secho(f"demo stopped: the {dag_id} DAG failed (see above)", fg=typer.colors.RED)
            return 1
    if train:
        code = _live(demo, traffic or TRAFFIC.get(profile, 100))
        if code:
            return code
    _summary(demo, train, time.perf_counter() - started)
    return 0


def _live(demo: Demo, n: int) -> int:
    """Normal then shifted traffic, each followed by a drift run over its window; simulated reviews, fp report."""
    url = f"http://127.0.0.1:{demo.port}"
    seed = load_params(demo.work / "params.yaml").data.profiles[demo.profile].seed
    # Unpaused, `retrain` gets a queued run from the drift asset event (paused DAGs get none), which
    # the summary shows; the scheduler of `airflow standalone` would start it.
    done = subprocess.run([str(BIN / "airflow"), "dags", "unpause", "retrain"], cwd=demo.work, env=demo.env,
                          capture_output=True, text=True, timeout=300)
    typer.echo("    retrain DAG unpaused: a drift asset event queues a run of it" if done.returncode == 0 else
               f"    could not unpause retrain: {done.stderr.strip()[-300:]}")
    streams = []
    for name, shift, offset in (("live-normal", None, 1000), ("live-shifted", SHIFT, 2000)):
        what = f"shifted ({shift})" if shift else "normal"
        with stage(f"live traffic: {n} {what} photos to POST {url}/review", demo.timings):
            batch_dir = traffic_batch(demo.work, name, n, seed + offset, shift)
            sent = time.perf_counter()
            stats = send_traffic(url, batch_dir)
            elapsed = time.perf_counter() - sent
            typer.echo(f"    {stats['photos']} photos, {stats['errors']} errors, decisions {stats['decisions']}, "
                       f"latency p50 {stats['p50_ms']} ms, p95 {stats['p95_ms']} ms")
            streams.append(batch_dir)
        if stats["errors"]:
            typer.secho(f"demo stopped: {stats['errors']} requests failed", fg=typer.colors.RED)
            return 1
        if _has("monitoring.drift"):
            window = _window(elapsed + 5)
            with stage(f"drift report through Airflow over the last {window} ({what} traffic)", demo.timings):
                if not run_dag(demo, "drift", {"window": window}):
                    return 1
            demo.notes[f"drift, {name}"] = _drift_note(demo.work)
            demo.notes[f"runs queued, {name}"] = _queued_runs(demo)
        else:
            demo.notes["drift"] = "monitoring.drift is not built yet: no drift report"
    if _has("monitoring.fp_report") and _has("monitoring.feedback"):
        with stage("false-positive report through Airflow (simulated manual-review outcomes)", demo.timings):
            typer.echo(f"    stored {simulate_reviews(demo.work, streams)} simulated review outcomes")
            if not run_dag(demo, "fp_report"):
                return 1
        demo.notes["false positives"] = str(_latest(demo.work, "fp-report-*.html"))
    else:
        demo.notes["false positives"] = "monitoring.fp_report is not built yet: no false-positive report"
    return 0


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
    return lines


def _summary(demo: Demo, train: bool, total: float) -> None:
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


app = typer.Typer(add_completion=False)


@app.command()
def main(profile: str = typer.Option("demo", help="data profile of params.yaml: demo (6000 photos) or tiny (96)"),
         batch: str = typer.Option("demo-b1", help="batch id of the demo batch"),
         workdir: Optional[Path] = typer.Option(None, help="workspace (default: this tree for demo, "
                                                           "$TMPDIR/reviewops-demo-tiny for tiny)"),
         port: Optional[int] = typer.Option(None, help="serving port (default: serving.port of params.yaml)"),
         traffic: Optional[int] = typer.Option(None, help="photos per live stream (default: 150, tiny 100)"),
         train: bool = typer.Option(True, help="retrain, deploy and send traffic after ingesting"),
         fresh: bool = typer.Option(False, help="delete the workspace first (never this tree)")) -> None:
    """`make demo`: ingest, retrain and deploy through Airflow, live traffic, drift and false-positive reports."""
    sys.exit(run_demo(batch, profile, train=train, workdir=workdir, port=port, traffic=traffic, fresh=fresh))


if __name__ == "__main__":
    app()
