"""Real PostgreSQL 15 and Redis 7 servers from Debian's packages, each on a free loopback port with a throw-away
data directory (``make services`` installs them). No mocks, no containers: the servers the platform team runs.
S3, which nothing here reaches, is stood in for by moto's S3-compatible HTTP server (PyPI, the ``scale`` extra).

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (its directory is made
outside pytest's private temporary tree, which that user cannot enter).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s\n{tail}")


def process_tree(pid: int) -> list:
    """``pid`` and every process below it (psutil handles), [] when it is gone: BentoML's circus and Airflow's task
    supervisor start their children in sessions of their own, so a process group does not hold them all."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _binary(name: str, pattern: str) -> str:
    found = sorted(glob.glob(pattern)) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        raise RuntimeError(f"{name} not found: `make services` installs Debian's postgresql, redis-server and haproxy")
    return found[-1]


# ------------------------------------------------------------------------------------------------ PostgreSQL

@dataclass
class Postgres:
    """A PostgreSQL cluster on 127.0.0.1:``port``; ``url(db)`` is a SQLAlchemy URL for the ``reviewops`` role."""
    port: int
    datadir: Path
    bindir: Path
    as_user: list[str] = field(default_factory=list)
    password: str = "reviewops"

    def url(self, db: str = "reviewops", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://reviewops:{self.password}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        done = subprocess.run([*self.as_user, str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"psql {sql!r}: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new database owned by the ``reviewops`` role; returns its SQLAlchemy URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER reviewops')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_postgres() -> Postgres:
    bindir = Path(_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")).parent
    root = Path(tempfile.mkdtemp(prefix="reviewops-pg-"))
    datadir = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-instructions"], check=True, capture_output=True, timeout=120)
    log = root / "postgres.log"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60",
                    "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
                          "-c max_connections=200 -c fsync=on", "start"], check=True, capture_output=True, timeout=90)
    pg = Postgres(port=port, datadir=datadir, bindir=bindir, as_user=as_user)
    _wait_port(port, None, 30, "postgres", log)
    pg.psql(f"CREATE ROLE reviewops LOGIN PASSWORD '{pg.password}' CREATEDB")
    pg.psql('CREATE DATABASE reviewops OWNER reviewops')
    return pg


# ------------------------------------------------------------------------------------------------ Redis

@dataclass
class Redis:
    port: int
    proc: subprocess.Popen
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> Redis:
    exe = _binary("redis-server", "/usr/bin/redis-server")
    root = Path(tempfile.mkdtemp(prefix="reviewops-redis-"))
    port = free_port()
    log = root / "redis.log"
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(root), "--logfile", str(log), "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_port(port, proc, 30, "redis-server", log)
    return Redis(port=port, proc=proc, dir=root)


# ------------------------------------------------------------------------------------------------ S3

@dataclass
class S3Server:
    """moto's S3-compatible server (werkzeug, threaded) on 127.0.0.1:``port``, in its own process group."""
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own group (start_new_session): only what we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_s3_server(log_dir: Path, timeout: float = 30.0) -> S3Server:
    port = free_port()
    log = log_dir / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(proc, port, log)
    try:
        _wait_port(port, proc, timeout, "moto_server", log)
    except RuntimeError:
        server.stop()
        raise
    return server
