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

This module drives the stages (workspace, Airflow, the DAG runs, their timings); the traffic, the
simulated reviews, the reports' verdicts and the summary of 4-6 are in ``pipelines.app.demo_live``.

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

from pipelines.app.demo_live import (describe_drift, describe_queue, find_latest, print_summary, send_traffic,
                                     simulate_reviews, traffic_batch)
from pipelines.app.project import BIN
from pipelines.params import load_params

SHIFT = "blur_rate=0.6,lighting=dark,new_sku_rate=0.3"      # the shifted stream: the live mix, then this on top
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


def open_gate(raw: dict) -> None:
    """The gate of tiny data (raw params.yaml, changed in place): 19 test photos leave most checks without a
    positive and tiny models reach no real floor, so every floor is 0 (real-photo limits at their loosest) and
    unmeasured checks pass; the regression criteria against production stay. Every graph is offered as INT8
    whatever its speed (``serving.int8.min_speedup`` 0): where the CPU has no VNNI, INT8 runs no faster, and the
    tiny run still takes the INT8 path (chosen by the reviewer's figures, registered, served); the real-photo
    figures of models trained for seconds swing with any change, so they may move any amount under INT8
    (``max_real_photo_change`` 1: measured and recorded, never the reason a unit stays FP32)."""
    raw["gate"]["allow_unmeasured"] = True
    raw["gate"]["recall_floors"] = {k: 0.0 for k in raw["gate"]["recall_floors"]}
    raw["gate"]["real_photos"] = {"manipulation_false_alarms": 1.0, "manipulation_edit_recall": 0.0,
                                  "blur_pooled_spearman": -1.0, "blur_sharp_flagged": 1.0, "unknown_sku": 0.0}
    raw["serving"]["int8"]["min_speedup"] = 0.0
    raw["serving"]["int8"]["max_real_photo_change"] = 1.0


def prepare_workspace(project: Path, work: Path, profile: str) -> None:
    """A copy of this tree's source files (no data, models or state) as a fresh git repo; tiny params for tiny."""
    for rel in _tree_files(project):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, work / rel)
    if profile == "tiny":
        raw = yaml.safe_load((work / "params.yaml").read_text())
        raw["train"]["profile"] = "tiny"
        open_gate(raw)
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
        stream = load_params(demo.work / "params.yaml").live_mix.stream
        code = _live(demo, traffic or stream.get(profile, max(stream.values())))
        if code:
            return code
    print_summary(demo, train, time.perf_counter() - started)
    return 0


def _live(demo: Demo, n: int) -> int:
    """Normal then shifted traffic, each followed by a drift run over its window; simulated reviews, fp report."""
    from pipelines.data.generate import live_mix_shift, parse_shift

    url = f"http://127.0.0.1:{demo.port}"
    params = load_params(demo.work / "params.yaml")
    seed = params.data.profiles[demo.profile].seed
    live = live_mix_shift(params)               # normal traffic is the live mix (params.yaml live_mix): ~65% clean
    mixes = {"live-normal": live, "live-shifted": {**live, **parse_shift(SHIFT)}}
    # Unpaused, `retrain` gets a queued run from the drift asset event (paused DAGs get none), which
    # the summary shows; the scheduler of `airflow standalone` would start it.
    done = subprocess.run([str(BIN / "airflow"), "dags", "unpause", "retrain"], cwd=demo.work, env=demo.env,
                          capture_output=True, text=True, timeout=300)
    typer.echo("    retrain DAG unpaused: a drift asset event queues a run of it" if done.returncode == 0 else
               f"    could not unpause retrain: {done.stderr.strip()[-300:]}")
    streams = []
    for name, shift, offset in (("live-normal", None, 1000), ("live-shifted", SHIFT, 2000)):
        what = f"shifted ({shift})" if shift else "normal (the live mix)"
        with stage(f"live traffic: {n} {what} photos to POST {url}/review", demo.timings):
            batch_dir = traffic_batch(demo.work, name, n, seed + offset, mixes[name])
            sent = time.perf_counter()
            stats = send_traffic(url, batch_dir)
            elapsed = time.perf_counter() - sent
            auto = stats["decisions"].get("auto_pass", 0) / max(stats["photos"] - stats["errors"], 1)
            typer.echo(f"    {stats['photos']} photos, {stats['errors']} errors, decisions {stats['decisions']} "
                       f"(auto-pass share {auto:.3f}), latency p50 {stats['p50_ms']} ms, p95 {stats['p95_ms']} ms")
            demo.notes[f"auto-pass, {name}"] = f"{auto:.3f} of {stats['photos'] - stats['errors']} photos"
            streams.append(batch_dir)
        if stats["errors"]:
            typer.secho(f"demo stopped: {stats['errors']} requests failed", fg=typer.colors.RED)
            return 1
        if _has("monitoring.drift"):
            window = _window(elapsed + 5)
            with stage(f"drift report through Airflow over the last {window} ({what} traffic)", demo.timings):
                if not run_dag(demo, "drift", {"window": window}):
                    return 1
            demo.notes[f"drift, {name}"] = describe_drift(demo.work)
            demo.notes[f"runs queued, {name}"] = describe_queue(demo)
        else:
            demo.notes["drift"] = "monitoring.drift is not built yet: no drift report"
    if _has("monitoring.fp_report") and _has("monitoring.feedback"):
        with stage("false-positive report through Airflow (simulated manual-review outcomes)", demo.timings):
            typer.echo(f"    stored {simulate_reviews(demo.work, streams)} simulated review outcomes")
            if not run_dag(demo, "fp_report"):
                return 1
        demo.notes["false positives"] = str(find_latest(demo.work, "fp-report-*.html"))
    else:
        demo.notes["false positives"] = "monitoring.fp_report is not built yet: no false-positive report"
    return 0


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _window(seconds: float) -> str:
    """A drift window (whole minutes) covering the last ``seconds``."""
    return f"{max(1, math.ceil(seconds / 60))}m"


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
