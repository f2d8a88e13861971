"""Airflow on the CeleryExecutor, for real: PostgreSQL metadata database, Redis broker, two Celery workers.

Every Airflow component runs as its own process group with a throw-away ``AIRFLOW_HOME`` and configuration
from environment variables only: ``airflow api-server``, ``airflow scheduler``, ``airflow dag-processor`` and
two ``airflow celery worker``: worker A serves the ``dvc`` and ``train`` queues (their only consumer) and
``default``, worker B serves ``default``. The project is a copy of the trained tiny project (git + DVC, the project's dvc.yaml) with
a new batch in ``data/incoming/``, as in tests/dags.

The chain runs the way the platform team runs it: ``airflow dags unpause`` and ``airflow dags trigger ingest``;
unpausing ``retrain`` starts its scheduled run, whose Bento asset event runs ``deploy``. While worker A runs a
training ``dvc repro``, the whole worker (every process it started, the task's own process group included) is
SIGKILLed, as when its machine dies, and started again: the scheduler finds the task's heartbeat gone, Airflow
retries it, and the runs end green with nothing half-written (``dvc status`` clean, no temporary files, no
stale DVC locks).

The task instances in PostgreSQL say where each task ran (``queue``; ``hostname``: each worker names itself
through ``[core] hostname_callable``, since both run on this one machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import yaml

from pipelines.train.families import FAMILIES
from tests.dags.test_dag_runs import production, review, with_pipeline
from tests.scaleout.services import free_port, process_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
BIN = Path(sys.executable).parent
CHAIN = ("ingest", "retrain", "deploy")
WORKER_A, WORKER_B = "worker-a", "worker-b"

# The tasks that write the git/DVC work tree or the registry (the spec this test holds the DAGs to).
DVC_TASKS = {("ingest", "version"), ("retrain", "train"), ("retrain", "evaluate"), ("retrain", "reviewer"),
             ("retrain", "gate"), ("retrain", "build")}


def _common():
    spec = importlib.util.spec_from_file_location("reviewops_dags_common", DAGS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUEUES = _common()
DVC_QUEUE, TRAIN_QUEUE, DEFAULT_QUEUE = QUEUES.DVC_QUEUE, QUEUES.TRAIN_QUEUE, QUEUES.DEFAULT_QUEUE

# [core] hostname_callable for the task processes: the worker's name, so that task_instance.hostname tells
# the two workers of this machine apart (on separate machines the default, the FQDN, does).
HOSTNAME_MODULE = '''
import os
import socket


def hostname() -> str:
    return os.environ.get("REVIEWOPS_WORKER_NAME") or socket.getfqdn()
'''


def now() -> float:
    return time.monotonic()


# ------------------------------------------------------------------------------------------------ processes

@dataclass
class Component:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        fh = open(self.log, "a")
        fh.write(f"\n===== start {self.starts}: {' '.join(self.cmd)}\n")
        fh.flush()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.log.parent, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The component and every process it started (Airflow runs each task in a process group of its own)."""
        return process_tree(self.proc.pid) if self.alive() else []

    def kill(self) -> list[str]:
        """SIGKILL the whole tree at once, as when the machine dies; returns what was killed."""
        procs = self.tree()
        killed = []
        for p in procs:
            try:
                killed.append(" ".join(p.cmdline())[:160])
            except psutil.Error:
                pass
        groups = set()
        for p in procs:
            try:
                groups.add(os.getpgid(p.pid))
            except OSError:
                pass
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except OSError:
                pass
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        if self.proc is not None:
            self.proc.wait(30)
        return killed

    def stop(self, grace: float = 20.0) -> None:
        procs = self.tree()
        if not procs:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        _, left = psutil.wait_procs(procs, timeout=grace)
        if left:
            self.kill()
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, n: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"----- {self.name} ({self.log}) -----\n{text[-n:]}"


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    db_url: str
    repo: Path
    bentoml_home: Path
    port: int
    api_port: int
    components: dict[str, Component] = field(default_factory=dict)
    _engine: object = None

    def add(self, name: str, args: list[str], **extra: str) -> Component:
        comp = Component(name, [str(BIN / "airflow"), *args], {**self.env, **extra}, self.home / f"{name}.log")
        self.components[name] = comp
        comp.start()
        return comp

    def airflow(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([str(BIN / "airflow"), *args], env=self.env, cwd=self.home, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"airflow {' '.join(args)} exited {done.returncode}:\n" \
                                     f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def sql(self, query: str, **params) -> list[dict]:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(query), params)]

    def runs(self) -> list[dict]:
        return self.sql("SELECT dag_id, run_id, state, run_type, start_date, end_date FROM dag_run "
                        "WHERE dag_id IN ('ingest', 'retrain', 'deploy') ORDER BY id")

    def tis(self, table: str = "task_instance") -> list[dict]:
        return self.sql(f"SELECT dag_id, run_id, task_id, map_index, rendered_map_index, state, try_number, hostname, "
                        f"queue, start_date, end_date FROM {table} WHERE dag_id IN ('ingest', 'retrain', 'deploy') "
                        f"ORDER BY start_date NULLS LAST")

    def describe(self) -> str:
        lines = ["dag runs:"]
        try:
            lines += [f"  {r['dag_id']:8} {r['run_id']:60} {r['state']}" for r in self.runs()]
            lines.append("task instances:")
            lines += [f"  {t['dag_id']:8} {t['task_id']:15} {t['map_index']:3} {str(t['state']):16} try {t['try_number']} "
                      f"{t['hostname'] or '-':10} {t['queue']}" for t in self.tis()]
        except Exception as exc:  # noqa: BLE001 - a report on the way to a failure: say why it is missing
            lines.append(f"  (database not readable: {exc})")
        for comp in self.components.values():
            lines.append(comp.tail())
        for log in sorted((self.home / "logs").rglob("*.log"))[-3:] if (self.home / "logs").exists() else []:
            lines.append(f"----- task log {log} -----\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(lines)

    def wait(self, what: str, check, timeout: float, every: float = 2.0):
        """Poll ``check()`` until it returns something truthy; fail (with every log's tail) after ``timeout``
        seconds, or at once when an Airflow component died or a run failed."""
        deadline = now() + timeout
        while True:
            result = check()
            if result:
                return result
            dead = [n for n, c in self.components.items() if not c.alive()]
            failed = [r for r in self.runs() if r["state"] == "failed"]
            if dead or failed or now() > deadline:
                why = f"dead: {dead}" if dead else f"failed runs: {failed}" if failed else f"{timeout:.0f} s passed"
                pytest.fail(f"waiting for {what}: {why}\n{self.describe()}", pytrace=False)
            time.sleep(every)

    def stop(self) -> None:
        for name in reversed(list(self.components)):
            self.components[name].stop()
        if self._engine is not None:
            self._engine.dispose()


def airflow_env(home: Path, db_url: str, broker: str, api_port: int, repo: Path, bentoml_home: Path,
                remote: Path) -> dict[str, str]:
    """Every setting of every component, from the environment alone (none in airflow.cfg)."""
    result_backend = "db+" + db_url.replace("postgresql+psycopg://", "postgresql://", 1)   # psycopg2 for Celery
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REVIEWOPS_", "BENTOML_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(home / "site"),                          # the hostname callable below
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "reviewops_worker_name.hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",     # the DAG files do not change: parse once
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
        # a worker that died stops heartbeating: its task is failed (then retried) after 60 s, not 300
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # the project every task works on
        "REVIEWOPS_ROOT": str(repo),
        "BENTOML_HOME": str(bentoml_home),
        "REVIEWOPS_DVC_REMOTE": str(remote),
        "BENTOML_DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
    })
    return env


def sh(repo: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


def _print_now(request, text: str) -> None:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(text, flush=True)


# ------------------------------------------------------------------------------------------------ the scenario

@pytest.fixture(scope="module")
def celery(request, trained_project, postgres, redis_server, tmp_path_factory):
    from pipelines.data.generate import generate_batch
    from pipelines.params import load_params

    began = now()
    base = tmp_path_factory.mktemp("celery")
    repo = base / "repo"
    subprocess.run(["cp", "-a", str(trained_project), str(repo)], check=True)
    port, api_port = free_port(), free_port()
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["serving"]["port"] = port                   # deploy's default port: a free one, not 3000
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with_pipeline(repo)
    generate_batch(repo / "data" / "incoming", "tiny-b2", 48, 12, params=load_params(repo / "params.yaml"), workers=2)

    home = base / "airflow"
    (home / "site").mkdir(parents=True)
    (home / "site" / "reviewops_worker_name.py").write_text(HOSTNAME_MODULE)
    db_url = postgres.create_database(f"airflow_celery_{os.getpid()}")
    env = airflow_env(home, db_url, redis_server.url, api_port, repo, base / "bentoml", base / "dvc-remote")
    cluster = Cluster(home=home, env=env, db_url=db_url, repo=repo, bentoml_home=base / "bentoml", port=port,
                      api_port=api_port)
    failures_before = request.session.testsfailed
    facts: dict = {"cluster": cluster, "timings": {"project": round(now() - began, 1)}}
    try:
        facts.update(_run_chain(cluster, facts["timings"]))
        yield facts
    except BaseException:
        _print_now(request, "\n" + cluster.describe())
        raise
    finally:
        if request.session.testsfailed > failures_before:
            _print_now(request, "\n" + cluster.describe())
        from pipelines.deploy.bluegreen import stop_all

        cluster.stop()
        stop_all(repo / ".reviewops" / "deploy")
        _print_now(request, f"\ncelery chain timings (s): {json.dumps(facts['timings'])}")


def _run_chain(cluster: Cluster, timings: dict) -> dict:
    t0 = now()
    cluster.airflow("db", "migrate", timeout=600)
    timings["db_migrate"] = round(now() - t0, 1)

    cluster.add("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(cluster.api_port)])
    cluster.add("scheduler", ["scheduler"])
    cluster.add("dag-processor", ["dag-processor"])
    worker_a = ["celery", "worker", "--celery-hostname", f"{WORKER_A}@%h", "--queues", f"{DVC_QUEUE},{TRAIN_QUEUE},{DEFAULT_QUEUE}",
                "--concurrency", "1", "--skip-serve-logs", "--without-gossip", "--without-mingle"]
    worker_b = ["celery", "worker", "--celery-hostname", f"{WORKER_B}@%h", "--queues", DEFAULT_QUEUE,
                "--concurrency", "1", "--skip-serve-logs", "--without-gossip", "--without-mingle"]
    cluster.add(WORKER_A, worker_a, REVIEWOPS_WORKER_NAME=WORKER_A)
    cluster.add(WORKER_B, worker_b, REVIEWOPS_WORKER_NAME=WORKER_B)

    def ready() -> bool:
        if any("ready." not in cluster.components[w].log.read_text(errors="replace") for w in (WORKER_A, WORKER_B)):
            return False
        try:
            import httpx

            if httpx.get(f"http://127.0.0.1:{cluster.api_port}/api/v2/monitor/health", timeout=5,
                         trust_env=False).status_code != 200:
                return False
        except Exception:  # noqa: BLE001 - not listening yet
            return False
        return len(cluster.sql("SELECT dag_id FROM serialized_dag WHERE dag_id IN ('ingest', 'retrain', 'deploy')")) == 3

    cluster.wait("the API server, both workers and the three DAGs parsed", ready, 300)
    timings["components_up"] = round(now() - t0, 1)

    # ingest: unpaused (its hourly schedule may start a run of its own: it finds the same batch) and triggered
    cluster.airflow("dags", "unpause", "ingest")
    cluster.airflow("dags", "unpause", "deploy")
    cluster.airflow("dags", "trigger", "ingest", "-c", json.dumps({"batch": "tiny-b2"}))
    t_ingest = now()

    def ingested() -> bool:
        runs = [r for r in cluster.runs() if r["dag_id"] == "ingest"]
        return bool(runs) and all(r["state"] == "success" for r in runs)

    cluster.wait("ingest", ingested, 420)
    timings["ingest"] = round(now() - t_ingest, 1)

    # retrain: unpausing starts its latest weekly interval at once (catch-up off), on the new batch
    cluster.airflow("dags", "unpause", "retrain")
    t_retrain = now()
    worker = cluster.components[WORKER_A]

    def training():
        """A train task running on worker A, and the training command under its dvc repro."""
        running = [t for t in cluster.tis() if t["dag_id"] == "retrain" and t["task_id"] == "train"
                   and t["state"] == "running" and t["hostname"] == WORKER_A]
        if not running:
            return None
        for p in worker.tree():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "train" in cmd and "repro" not in cmd and ("reviewops" in cmd or "pipelines" in cmd):
                return running[0], cmd
        return None

    ti, cmd = cluster.wait("a training dvc repro on worker A", training, 600, every=0.5)
    time.sleep(3)                                   # well into the training: it is writing its outputs
    kill_wall = datetime.now().astimezone()
    t_kill = now()
    killed = worker.kill()
    timings["retrain_start_to_kill"] = round(t_kill - t_retrain, 1)
    time.sleep(2)
    worker.start()                                  # the machine is back

    def retried():
        for t in cluster.tis():
            if (t["dag_id"], t["task_id"], t["map_index"]) == (ti["dag_id"], ti["task_id"], ti["map_index"]) \
                    and t["run_id"] == ti["run_id"] and t["state"] == "success":
                return t
        return None

    done = cluster.wait(f"the killed task {ti['task_id']}[{ti['rendered_map_index']}] to succeed on a retry", retried,
                        1200, every=3)
    timings["kill_to_task_success"] = round(now() - t_kill, 1)

    def retrained() -> bool:
        runs = [r for r in cluster.runs() if r["dag_id"] == "retrain"]
        return bool(runs) and all(r["state"] == "success" for r in runs)

    cluster.wait("retrain", retrained, 1800, every=3)
    timings["kill_to_retrain_success"] = round(now() - t_kill, 1)
    timings["retrain"] = round(now() - t_retrain, 1)

    def deployed() -> bool:
        runs = [r for r in cluster.runs() if r["dag_id"] == "deploy"]
        return bool(runs) and all(r["state"] == "success" for r in runs)

    cluster.wait("deploy (the Bento asset event of retrain)", deployed, 900, every=3)
    timings["kill_to_deploy_success"] = round(now() - t_kill, 1)
    timings["chain"] = round(now() - t_ingest, 1)

    def quiet() -> bool:     # an hourly ingest run that began meanwhile finds nothing new: let it end
        return all(r["state"] in ("success", "failed") for r in cluster.runs())

    cluster.wait("every run to end", quiet, 300)
    return {"killed_ti": ti, "killed_cmd": cmd, "killed_procs": killed, "kill_wall": kill_wall, "retried_ti": done,
            "runs": cluster.runs(), "tis": cluster.tis(), "history": cluster.tis("task_instance_history"),
            "worker_a_starts": worker.starts}


# ------------------------------------------------------------------------------------------------ the tests

def test_the_chain_runs_green_on_celery_and_serves_the_new_models(celery):
    cluster, runs = celery["cluster"], celery["runs"]
    assert {r["dag_id"] for r in runs} == set(CHAIN), runs
    assert all(r["state"] == "success" for r in runs), runs
    retrain = [r for r in runs if r["dag_id"] == "retrain"]
    deploy = [r for r in runs if r["dag_id"] == "deploy"]
    assert len(retrain) == 1 and retrain[0]["run_type"] == "scheduled", retrain
    assert len(deploy) == 1 and deploy[0]["run_type"] == "asset_triggered", deploy   # the Bento event of retrain
    tis = celery["tis"]
    assert all(t["state"] in ("success", "skipped") for t in tis), [t for t in tis if t["state"] not in ("success",)]

    repo, home = cluster.repo, cluster.bentoml_home
    assert (repo / "data" / "batches" / "tiny-b2.dvc").exists()
    assert "tiny-b2" in sh(repo, "git", "log", "--format=%s")
    trained = [t for t in tis if t["task_id"] == "train"]
    assert trained and all(t["state"] == "success" for t in trained)
    for family in sorted(production(home)):
        record = repo / "models" / family / "train.json"
        if record.exists():                       # prohibited: one model per category
            assert json.loads(record.read_text())["data"]["batches"] == ["tiny-b1", "tiny-b2"], family
    built = json.loads((repo / "reports" / "build.json").read_text())
    assert set(production(home)) == set(FAMILIES) and built["models"] == production(home)   # every family promoted
    photo = sorted((repo / "data" / "batches" / "tiny-b2" / "images").glob("*.jpg"))[0]
    assert review(cluster.port, photo, "celery-test")["models"] == production(home)   # the deployed service


def test_every_dvc_task_ran_on_worker_a_and_the_others_on_both_workers(celery):
    tis, history = celery["tis"], celery["history"]
    every = [t for t in tis + history if t["hostname"]]
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["dag_id"] for t in ran} == set(CHAIN)
    dvc = [t for t in every if (t["dag_id"], t["task_id"]) in DVC_TASKS]
    others = [t for t in every if (t["dag_id"], t["task_id"]) not in DVC_TASKS]
    assert {(t["dag_id"], t["task_id"]) for t in dvc if t["state"] == "success"} == DVC_TASKS
    wrong = [(t["dag_id"], t["task_id"], t["map_index"], t["queue"], t["hostname"]) for t in dvc
             if t["queue"] != (TRAIN_QUEUE if t["task_id"] == "train" else DVC_QUEUE) or t["hostname"] != WORKER_A]
    assert not wrong, f"DVC tasks not on the {DVC_QUEUE} (training: {TRAIN_QUEUE}) queue of {WORKER_A}: {wrong}"
    assert {t["queue"] for t in others} == {DEFAULT_QUEUE}, {(t["task_id"], t["queue"]) for t in others}
    hosts = {t["hostname"] for t in others}
    assert hosts <= {WORKER_A, WORKER_B} and WORKER_B in hosts, hosts      # the default queue: any worker
    assert {t["hostname"] for t in every} == {WORKER_A, WORKER_B}
    print("\nwhere each task ran:")
    for t in sorted(every, key=lambda t: t["start_date"]):
        print(f"  {t['dag_id']:8} {t['task_id']:14} {t['rendered_map_index'] or t['map_index']!s:22} try "
              f"{t['try_number']} {t['state']:10} {t['queue']:8} {t['hostname']}")


def test_a_killed_worker_s_task_is_retried_and_leaves_nothing_half_written(celery):
    cluster, ti, done = celery["cluster"], celery["killed_ti"], celery["retried_ti"]
    repo = cluster.repo
    killed = celery["killed_procs"]
    assert any("celery worker" in c for c in killed) and any("reviewops train" in c for c in killed), killed
    assert celery["worker_a_starts"] == 2
    assert done["try_number"] > ti["try_number"] and done["hostname"] == WORKER_A
    earlier = [h for h in celery["history"] if (h["run_id"], h["task_id"], h["map_index"]) ==
               (ti["run_id"], ti["task_id"], ti["map_index"])]
    assert [h["try_number"] for h in earlier] == list(range(1, done["try_number"])), earlier
    killed_try = next(h for h in earlier if h["try_number"] == ti["try_number"])
    assert killed_try["hostname"] == WORKER_A and killed_try["state"] != "success", killed_try
    print(f"\nkilled {ti['task_id']}[{ti['rendered_map_index']}] try {ti['try_number']} during `{celery['killed_cmd']}`;"
          f" success on try {done['try_number']}; timings {json.dumps(celery['timings'])}")

    # nothing half-written: every stage matches dvc.lock, DVC holds no lock of a dead process, no temp files
    status = sh(repo, "dvc", "status")
    assert "up to date" in status, status
    # DVC's rwlock may still list the killed `dvc repro` (DVC drops a dead process's entries when it meets
    # them): no live process may hold any part of the work tree
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    held = json.loads(rwlock.read_text() or "{}") if rwlock.exists() else {}
    holders = {(info["pid"], info["cmd"]) for mode in ("read", "write") for infos in (held.get(mode) or {}).values()
               for info in (infos if isinstance(infos, list) else [infos])}
    assert not [h for h in holders if psutil.pid_exists(h[0])], holders
    print(f"rwlock entries of dead processes (ignored by DVC): {sorted(holders)}")
    stray = [p for p in (repo / "models").rglob("*") if p.name.endswith((".tmp", ".part", ".partial"))
             or p.name.startswith((".tmp", "tmp"))]
    assert not stray, stray
    left = []                                    # no process of the killed try still runs in the project
    for p in psutil.process_iter(["cmdline", "cwd"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["cwd"] == str(repo) and ("repro" in cmd or "reviewops train" in cmd):
            left.append(cmd)
    assert not left, left
