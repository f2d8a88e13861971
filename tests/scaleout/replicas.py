"""Two (or more) reviewer replicas of one Bento behind haproxy, on loopback, for the scale-out tests and benchmark.

- :func:`prepare_bento`: a copy of the trained tiny project, gated (`reviewops gate`), its drift reference stored
  (`reviewops reference --source val`) and built (`reviewops build`), plus a generated traffic batch whose photos
  are not in the versioned data (the active-learning pool must not be labelled already).
- :class:`Replica`: ``bentoml serve TAG`` on a fixed loopback port in a process group of its own, with its own
  BENTOML_HOME view (``pipelines.deploy.bluegreen._instance_home``) and the shared prediction log
  (``REVIEWOPS_PREDICTION_LOG``); ``kill()`` SIGKILLs the whole group, ``start()`` again reuses the port.
- :class:`HAProxy`: Debian's haproxy with the project's ``deploy/haproxy.cfg`` (the file the platform team uses),
  ports filled in through its environment variables; ``stats()`` reads its CSV statistics page.
- :func:`load`: bounded load (count and wall time) at a fixed concurrency; one :class:`Answer` per request.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.scaleout.services import free_port, process_tree

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HAPROXY = "/usr/sbin/haproxy"
# the shipped config; REVIEWOPS_HAPROXY_CFG names another (e.g. one without retries, to see the tests fail)
HAPROXY_CFG = Path(os.environ.get("REVIEWOPS_HAPROXY_CFG") or PROJECT / "deploy" / "haproxy.cfg")
BUILT_ENV = "REVIEWOPS_REPLICAS_BUILT"   # a Built.save file: reuse that Bento instead of training and building one
BACKEND = "reviewers"
SERVED_BY = "x-served-by"            # the response header deploy/haproxy.cfg adds: the replica's server name


def cli(repo: Path, env: dict, *args: str) -> str:
    done = subprocess.run([str(BIN / "reviewops"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise AssertionError(f"reviewops {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done.stdout


@dataclass
class Built:
    repo: Path
    env: dict
    tag: str
    bento_path: Path
    traffic: Path            # a generated batch (manifest + images) never versioned: the photos sent

    def save(self, path: Path) -> None:
        import json

        Path(path).write_text(json.dumps({"repo": str(self.repo), "env": self.env, "tag": self.tag,
                                          "bento_path": str(self.bento_path), "traffic": str(self.traffic)}))

    @classmethod
    def load(cls, path: Path) -> "Built":
        import json

        d = json.loads(Path(path).read_text())
        return cls(Path(d["repo"]), d["env"], d["tag"], Path(d["bento_path"]), Path(d["traffic"]))


def prepare_bento(trained_project: Path, base: Path, traffic_photos: int = 48, seed: int = 4242) -> Built:
    from pipelines.data.generate import generate_batch
    from pipelines.deploy.bluegreen import resolve_bento
    from pipelines.params import load_params

    repo = base / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    for key in ("REVIEWOPS_PREDICTION_LOG", "REVIEWOPS_PARAMS", "REVIEWOPS_API_TOKEN", "REVIEWOPS_ROOT"):
        env.pop(key, None)
    cli(repo, env, "gate")
    cli(repo, env, "reference", "--source", "val")
    cli(repo, env, "build")
    tag, path = resolve_bento("reviewops-reviewer:latest", env)
    traffic = generate_batch(base / "traffic", "replica-traffic", traffic_photos, seed,
                             params=load_params(repo / "params.yaml"), workers=2)
    return Built(repo, env, tag, path, Path(traffic))


# ------------------------------------------------------------------------------------------------ replicas

class Replica:
    """``bentoml serve TAG --host 127.0.0.1 --port PORT`` in its own session (process group), logs in ``log``."""

    def __init__(self, name: str, built: Built, port: int, state_dir: Path, log_url: str, extra_env: dict | None = None):
        self.name, self.built, self.port, self.state_dir, self.log_url = name, built, port, state_dir, log_url
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log = state_dir / "logs" / f"{name}-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        from pipelines.deploy.bluegreen import _instance_home

        env = {**self.built.env, "REVIEWOPS_PREDICTION_LOG": self.log_url, "REVIEWOPS_ROOT": str(self.built.repo),
               **self.extra_env}
        env["BENTOML_HOME"] = str(_instance_home(self.state_dir, self.port, self.built.env["BENTOML_HOME"]))
        return env

    def command(self) -> list[str]:
        from pipelines.deploy.bluegreen import _bentoml_cmd

        return [*_bentoml_cmd(), "serve", self.built.tag, "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), cwd=self.built.bento_path, env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 240) -> float:
        """Seconds until ``/readyz`` answered 200 (AssertionError with the log's tail otherwise)."""
        start = time.monotonic()
        with httpx.Client(timeout=3.0, trust_env=False) as client:
            while time.monotonic() - start < timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return time.monotonic() - start
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise AssertionError(f"replica {self.name} on {self.port} not ready within {timeout:g} s "
                             f"(exit {self.proc.poll() if self.proc else None}):\n{self.tail()}")

    def processes(self) -> list:
        """``bentoml serve``, circusd and the workers. BentoML's circus starts circusd and every worker in a session
        of its own (setsid), so the process group of ``bentoml serve`` holds none of them: a SIGKILL of that group
        alone leaves the workers serving on the port (orphans of init)."""
        return [] if self.proc is None else process_tree(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL every process of the replica (each one's process group) at once, as when its machine dies."""
        for p in self.processes():
            _kill_tree_member(p.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM (BentoML stops its workers), then SIGKILL whatever of the replica is left."""
        if self.proc is None:
            return
        tree = self.processes()
        if self.proc.poll() is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        for p in tree:
            if p.is_running():
                _kill_tree_member(p.pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _kill_tree_member(pid: int, sig: int) -> None:
    """Signal ``pid``'s process group when ``pid`` leads it (bentoml serve, circusd, each worker), else ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------------ haproxy

def haproxy_env(front: int, stats: int, replicas: list[str]) -> dict:
    """The environment deploy/haproxy.cfg reads: the front's and the statistics page's addresses, two replicas."""
    if len(replicas) != 2:
        raise ValueError("deploy/haproxy.cfg names two replicas (REVIEWOPS_REPLICA_1, REVIEWOPS_REPLICA_2)")
    return {"REVIEWOPS_FRONT_BIND": f"127.0.0.1:{front}", "REVIEWOPS_STATS_BIND": f"127.0.0.1:{stats}",
            "REVIEWOPS_REPLICA_1": replicas[0], "REVIEWOPS_REPLICA_2": replicas[1]}


class HAProxy:
    def __init__(self, cfg: Path, env: dict, log: Path):
        self.cfg, self.env, self.log = cfg, env, log
        self.front = int(env["REVIEWOPS_FRONT_BIND"].rsplit(":", 1)[1])
        self.stats_port = int(env["REVIEWOPS_STATS_BIND"].rsplit(":", 1)[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front}"

    def start(self) -> None:
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.cfg)], env={**os.environ, **self.env},
                               capture_output=True, text=True, timeout=30)
        if check.returncode:
            raise AssertionError(f"haproxy -c -f {self.cfg}: {check.stdout}{check.stderr}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # -db: foreground, no daemon (the process group is ours to stop)
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)], env={**os.environ, **self.env},
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except (httpx.HTTPError, OSError):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise AssertionError(f"haproxy did not start: {self.log.read_text()[-2000:]}")

    def stats(self) -> dict[str, dict]:
        """The backend's servers (and BACKEND itself) by name: status, stot, hrsp_5xx, chkdown, ... from ``/stats;csv``."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=3.0, trust_env=False).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == BACKEND}

    def status(self, server: str) -> str:
        return self.stats()[server]["status"]

    def stop(self) -> None:
        if self.proc is None:
            return
        _killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# ------------------------------------------------------------------------------------------------ load

@dataclass
class Answer:
    i: int
    started: float           # monotonic
    ended: float
    status: int              # HTTP status, 0 for a connection error or timeout
    request_id: str | None = None
    decision: str | None = None
    server: str | None = None
    error: str | None = None


@dataclass
class Photo:
    data: bytes
    name: str
    listing_id: str
    sku_id: str | None


def traffic_photos(batch: Path) -> list[Photo]:
    from pipelines.data.manifest import read_manifest

    rows = read_manifest(batch)
    return [Photo((batch / r["image"]).read_bytes(), Path(r["image"]).name, r["listing_id"],
                  r["claimed_sku"] if isinstance(r.get("claimed_sku"), str) and r["claimed_sku"] else None)
            for _, r in rows.iterrows()]


def post_review(client: httpx.Client, photo: Photo, i: int) -> Answer:
    started = time.monotonic()
    fields = {"listing_id": photo.listing_id, **({"sku_id": photo.sku_id} if photo.sku_id else {})}
    try:
        r = client.post("/review", files={"photo": (photo.name, photo.data, "image/jpeg")}, data=fields)
    except httpx.HTTPError as exc:
        return Answer(i, started, time.monotonic(), 0, error=f"{type(exc).__name__}: {exc}")
    ended = time.monotonic()
    answer = Answer(i, started, ended, r.status_code, server=r.headers.get(SERVED_BY))
    if r.status_code == 200:
        try:
            body = r.json()
            answer.request_id, answer.decision = body["request_id"], body["decision"]
        except (ValueError, KeyError) as exc:
            answer.status, answer.error = -1, f"unreadable 200: {exc}: {r.text[:200]}"
    else:
        answer.error = r.text[:300]
    return answer


def load(url: str, photos: list[Photo], n: int, concurrency: int, max_seconds: float,
         stop: threading.Event | None = None, timeout: float = 150.0) -> list[Answer]:
    """POST ``n`` reviews (photo ``i % len(photos)``) at ``concurrency``; stops early after ``max_seconds`` or when
    ``stop`` is set (requests not started are not sent). Bounded in count and in time."""
    deadline = time.monotonic() + max_seconds
    stop = stop or threading.Event()
    counter = iter(range(n))
    lock = threading.Lock()
    out: list[Answer] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False, limits=limits) as client:
        def worker() -> None:
            while time.monotonic() < deadline and not stop.is_set():
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                answer = post_review(client, photos[i % len(photos)], i)
                with lock:
                    out.append(answer)

        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(worker) for _ in range(concurrency)]:
                f.result()
    return sorted(out, key=lambda a: a.i)


@dataclass
class Stack:
    """Replicas behind haproxy; ``close()`` stops every process, whatever state the test left them in."""
    replicas: list[Replica]
    haproxy: HAProxy
    log_url: str
    built: Built
    closed: list = field(default_factory=list)

    def close(self) -> None:
        for thing in (self.haproxy, *self.replicas):
            try:
                thing.stop()
            except Exception as exc:                     # stop the others anyway
                self.closed.append(f"{thing}: {exc}")


def start_stack(built: Built, base: Path, log_url: str, n: int = 2) -> Stack:
    """``n`` replicas on free loopback ports writing ``log_url``, ready, and haproxy (deploy/haproxy.cfg) in front."""
    state = base / "replicas"
    replicas = [Replica(f"r{k + 1}", built, free_port(), state, log_url) for k in range(n)]
    front, stats = free_port(), free_port()
    haproxy = HAProxy(HAPROXY_CFG, haproxy_env(front, stats, [f"127.0.0.1:{r.port}" for r in replicas]),
                      state / "logs" / "haproxy.log")
    stack = Stack(replicas, haproxy, log_url, built)
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_ready()
        haproxy.start()
        wait_status(haproxy, {r.name: "UP" for r in replicas}, 30)
    except BaseException:
        stack.close()
        raise
    return stack


def wait_status(haproxy: HAProxy, want: dict[str, str], timeout: float) -> float:
    """Seconds until haproxy reports every server in ``want`` with that status (UP, DOWN ...)."""
    start = time.monotonic()
    while True:
        stats = haproxy.stats()
        if all(stats[s]["status"].split()[0] == v for s, v in want.items()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"haproxy servers {[(s, stats[s]['status']) for s in want]} not {want} "
                                 f"after {timeout:g} s")
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ the monitors on both logs

def _rows(url: str, table: str) -> list[dict]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        t = sa.Table(table, meta, autoload_with=engine)
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]
    finally:
        engine.dispose()


def copy_to_sqlite(pg_url: str, sqlite_url: str) -> dict[str, int]:
    """The predictions and feedback rows of ``pg_url``, every column (ids too), into a new SQLite log."""
    import sqlalchemy as sa

    from monitoring.feedback import FeedbackStore, feedback_table
    from monitoring.prediction_log import PredictionLog, predictions

    log, store = PredictionLog(sqlite_url), FeedbackStore(sqlite_url)
    copied = {}
    try:
        for table, engine in ((predictions, log.engine), (feedback_table, store.engine)):
            rows = _rows(pg_url, table.name)
            with engine.begin() as conn:
                conn.execute(sa.insert(table), rows)
            copied[table.name] = len(rows)
    finally:
        log.close()
        store.close()
    return copied


def feedback_payloads(predictions, manifest, categories: list[str]) -> list[dict]:
    """The simulated reviewers' verdicts (ground truth of the generator) as ``POST /feedback`` JSON objects."""
    from monitoring.feedback import simulate_feedback

    rows = simulate_feedback(manifest, predictions, categories, seed=7)
    payloads = []
    for listing, group in rows.groupby("listing_id", sort=True):
        reviews = group[group["verdict"] != "missed"]
        misses = group[group["verdict"] == "missed"]
        doc = {"listing_id": listing, "request_id": group["request_id"].iloc[0], "source": "replica-test"}
        if len(reviews):
            doc["verdicts"] = {c: v == "confirmed" for c, v in zip(reviews["check"], reviews["verdict"])}
            doc["reviewer"], doc["reviewed_at"] = "sim", reviews["reviewed_at"].iloc[0]
        if len(misses):
            doc["misses"] = list(misses["check"])
        payloads.append(doc)
    return payloads


def _plain(report) -> dict:
    out = report.as_dict()
    for key in ("html", "json", "snapshot", "project"):
        out.pop(key, None)
    return json.loads(json.dumps(out, default=str))


def reports_from(repo: Path, url: str, until, category: str, stamp: str) -> dict:
    """Drift report, false-positive report and an active-learning queue of the log at ``url``
    ($REVIEWOPS_PREDICTION_LOG while they run), as plain data to compare."""
    import pandas as pd

    from monitoring.drift import run_drift
    from monitoring.fp_report import run_fp_report
    from monitoring.prediction_log import ENV_VAR
    from pipelines.app.active_learning import select

    saved = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = url
    try:
        drift = run_drift(repo, "1d", until=until, alert=False, workspace=False)
        fp = run_fp_report(repo, 1, until=until)
        queue = select(repo, "prohibited", category, k=12, stamp=stamp)
    finally:
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved
    picked = pd.read_csv(Path(queue.path) / "queue.csv")
    return {"drift": _plain(drift), "fp": _plain(fp), "queue": {**queue.as_dict(), "path": None},
            "picked": picked.drop(columns=["path"]).fillna("").to_dict("records"),   # path: under the queue's stamp
            "picked_sha": sorted(picked["sha256"]) if "sha256" in picked else None}
