"""The serving port's front: a small asyncio reverse proxy to the active Bento instance.

The active upstream is named in ``<state_dir>/active.json`` ({"bento", "url", "pid", "since"}).
A deploy switches traffic by replacing that file atomically (``write_active``); the router stats it
on every request and rereads it when it changed, so a switch needs no restart and requests already
in flight finish on the upstream they started on. Without a live upstream it answers 503 JSON.
``GET /-/router`` answers the router's own view (used by deploy to confirm a switch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger("reviewops.router")

ACTIVE = "active.json"
ROUTER = "router.json"      # the router's pid file: {"pid", "port", "since"}
ROUTER_LOG = "router.log"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- state files and processes

def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then ``os.replace`` it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_active(state_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(state_dir) / ACTIVE)


def write_active(state_dir: Path, bento: str, url: str, pid: int) -> dict[str, Any]:
    """Switch traffic: atomically name a new active upstream."""
    data = {"bento": bento, "url": url, "pid": pid, "since": now_iso()}
    write_json_atomic(Path(state_dir) / ACTIVE, data)
    return data


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (reaps it when it is our exited child; zombies count as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_group(pid: int | None, grace: float = 10.0, expect: str | None = None) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` s; True if it was running.

    ``expect``: a substring its command line must contain (guards against a recycled pid).
    """
    if not pid_alive(pid):
        return False
    assert pid is not None
    if expect and expect not in cmdline(pid):
        log.warning("pid %s is not %r any more; not signalled", pid, expect)
        return False
    tree = _descendants(pid)                # BentoML's circusd and workers each lead a session of their own
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)      # stragglers of the group, or the leader itself
    for child in tree:                      # and those outside its group, which would keep serving on the port
        try:
            if child.is_running():
                child.kill()
        except Exception:                   # psutil.NoSuchProcess / AccessDenied: gone or not ours
            pass
    deadline = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def _descendants(pid: int) -> list:
    """Every process below ``pid`` (psutil handles, which refuse to signal a recycled pid); [] when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback TCP port that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the proxy

class Upstream:
    """The active upstream, reread from ``active.json`` whenever its stat changes."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / ACTIVE
        self._key: tuple[int, int, int] | None = None
        self.active: dict[str, Any] | None = None

    def current(self) -> dict[str, Any] | None:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            key = None
        if key != self._key:
            self._key = key
            self.active = read_json(self.path) if key else None
            log.info("upstream -> %s", self.active and f"{self.active.get('bento')} at {self.active.get('url')}")
        return self.active


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _filter(raw: list[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    named = {t.strip().lower() for k, v in raw if k.lower() == b"connection" for t in v.split(b",")}
    skip = {h.encode() for h in HOP_BY_HOP} | named | drop
    return [(k, v) for k, v in raw if k.lower() not in skip]


def create_app(state_dir: Path) -> Starlette:
    """The proxy as a Starlette app forwarding every path to the active upstream."""
    upstream = Upstream(state_dir)
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        clients["http"] = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=30.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            follow_redirects=False, trust_env=False)
        try:
            yield
        finally:
            await clients["http"].aclose()

    async def router_info(_request: Request) -> Response:
        return JSONResponse({"router": "reviewops", "pid": os.getpid(), "state_dir": str(state_dir),
                             "active": upstream.current()})

    async def proxy(request: Request) -> Response:
        active = upstream.current()
        if not active or not active.get("url"):
            return _error(503, "no_upstream", f"no active instance in {upstream.path}")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        url = active["url"].rstrip("/") + raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        headers = _filter(request.headers.raw, frozenset({b"host"}))
        client_host = request.client.host if request.client else ""
        headers += [(b"x-forwarded-for", client_host.encode()), (b"x-forwarded-proto", b"http"),
                    (b"x-forwarded-host", request.headers.get("host", "").encode())]
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        req = clients["http"].build_request(request.method, url, headers=headers,
                                            content=request.stream() if has_body else None)
        try:
            try:
                resp = await clients["http"].send(req, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if has_body:                # the body stream is spent: only a bodiless request can be resent
                    raise
                # a pooled keep-alive connection the upstream had just closed: once more, on a fresh one
                req = clients["http"].build_request(request.method, url, headers=headers)
                resp = await clients["http"].send(req, stream=True)
        except httpx.TransportError as exc:
            return _error(503, "upstream_unavailable",
                          f"{active.get('bento')} at {active['url']}: {type(exc).__name__}: {exc}")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()

        out = StreamingResponse(body(), status_code=resp.status_code)
        out.raw_headers = _filter(resp.headers.raw)
        return out

    return Starlette(routes=[Route("/-/router", router_info, methods=["GET"]),
                             Route("/{path:path}", proxy, methods=METHODS)], lifespan=lifespan)


def run_router(state_dir: Path, port: int) -> None:
    """Serve the proxy on 127.0.0.1:``port`` until SIGTERM/SIGINT (blocking)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)     # no line per proxied request
    uvicorn.run(create_app(Path(state_dir)), host="127.0.0.1", port=port, access_log=False,
                log_level="info", timeout_graceful_shutdown=30)


# ---------------------------------------------------------------- background process

def ensure_router(state_dir: Path, port: int, timeout: float = 30.0) -> int:
    """The pid of this state dir's router on ``port``, started detached if it is not running."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    info = read_json(state_dir / ROUTER) or {}
    pid = info.get("pid")
    if pid_alive(pid) and "pipelines.deploy.router" in cmdline(pid):
        if info.get("port") == port and port_open(port):
            return pid
        if info.get("port") != port:
            raise RuntimeError(f"the router of {state_dir} (pid {pid}) listens on port {info.get('port')}, "
                               f"not {port}; stop it first")
    if port_open(port):
        raise RuntimeError(f"port {port} is already in use by another process; cannot start the router")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with open(state_dir / ROUTER_LOG, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.deploy.router", "--state-dir", str(state_dir), "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=root,
            start_new_session=True)
    write_json_atomic(state_dir / ROUTER, {"pid": proc.pid, "port": port, "since": now_iso()})
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid, grace=2)
            (state_dir / ROUTER).unlink(missing_ok=True)
            raise RuntimeError(f"the router did not start on port {port}; see {state_dir / ROUTER_LOG}")
        time.sleep(0.05)
    return proc.pid


def stop_router(state_dir: Path) -> bool:
    """Stop this state dir's router; True if one was running."""
    path = Path(state_dir) / ROUTER
    info = read_json(path) or {}
    stopped = stop_group(info.get("pid"), grace=10, expect="pipelines.deploy.router")
    path.unlink(missing_ok=True)
    return stopped


def router_status(state_dir: Path) -> dict[str, Any]:
    info = read_json(Path(state_dir) / ROUTER) or {}
    pid = info.get("pid")
    running = pid_alive(pid) and "pipelines.deploy.router" in cmdline(pid)
    return {**info, "running": bool(running and info.get("port") and port_open(info["port"]))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ReviewOps serving router (reverse proxy to the active Bento)")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_router(args.state_dir, args.port)


if __name__ == "__main__":
    main()
