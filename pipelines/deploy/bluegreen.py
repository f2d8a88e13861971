"""Blue/green deploy of a reviewer Bento on one machine, behind ``pipelines.deploy.router``.

``deploy`` starts the new Bento (``bentoml serve TAG`` on a free loopback port, detached, logs in
``<state_dir>/logs/``), waits for ``GET /readyz`` == 200, replays the Bento's golden smoke set against
it, then switches the router to it (atomic replace of ``active.json``) and, after a short drain, stops
the old instance. On any failure the new instance is stopped, ``active.json`` is left as it was (the
old instance keeps serving) and ``DeployError`` says what failed. Every attempt is appended to
``<state_dir>/history.jsonl``.
"""

from __future__ import annotations

import fcntl
import json
import mimetypes
import os
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from pipelines.deploy.router import (ACTIVE, free_port, now_iso, pid_alive, read_active, router_status, ensure_router,
                     stop_group, stop_router, write_active, write_json_atomic)
from pipelines.serve.contract import TOKEN_ENV

DRAIN_S = 2.0                 # the old instance keeps running this long after the switch
STOP_GRACE_S = 15.0           # SIGTERM -> SIGKILL
SMOKE_TIMEOUT_S = 60.0        # per golden request
DECISIONS = ("auto_pass", "manual_review")
FORM_FIELDS = ("sku_id", "category", "listing_id")
HISTORY = "history.jsonl"


class DeployError(RuntimeError):
    """A deploy that did not switch traffic; the message says why."""


@dataclass(frozen=True)
class GoldenPhoto:
    file: Path
    fields: dict[str, str]
    decision: str
    reasons: tuple[str, ...]


# ---------------------------------------------------------------- inputs

def resolve_bento(tag: str, env: dict[str, str] | None = None) -> tuple[str, Path]:
    """The exact tag and directory of a Bento in the store (``BENTOML_HOME`` from ``env`` first)."""
    with warnings.catch_warnings():     # bentoml's import-time pathspec DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        import bentoml
        from bentoml._internal.bento.bento import BentoStore

    home = (env or {}).get("BENTOML_HOME") or os.environ.get("BENTOML_HOME")
    try:
        if home:
            bento = bentoml.bentos.get(tag, _bento_store=BentoStore(Path(home) / "bentos"))
        else:
            bento = bentoml.bentos.get(tag)
    except Exception as exc:
        raise DeployError(f"Bento {tag!r} not found in the store{f' {home}' if home else ''}: {exc}") from exc
    return str(bento.tag), Path(bento.path)


def default_golden(bento_path: Path) -> Path:
    return Path(bento_path) / "src" / "golden" / "golden.json"


def load_golden(path: Path) -> list[GoldenPhoto]:
    """The smoke set of ``golden.json`` (photo paths relative to its directory)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        entries = raw["photos"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"golden smoke set {path} is missing or malformed: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise DeployError(f"golden smoke set {path} has no photos")
    photos = []
    for i, e in enumerate(entries):
        file = path.parent / str(e.get("file", ""))
        if not e.get("file") or not file.is_file():
            raise DeployError(f"golden photo #{i} ({e.get('file')!r}) of {path} does not exist")
        if e.get("decision") not in DECISIONS or not isinstance(e.get("reasons", []), list):
            raise DeployError(f"golden photo {e['file']} of {path}: bad decision/reasons {e.get('decision')!r}")
        fields = {k: str(e[k]) for k in FORM_FIELDS if e.get(k) is not None}
        photos.append(GoldenPhoto(file, fields, e["decision"], tuple(sorted(e.get("reasons", [])))))
    return photos


# ---------------------------------------------------------------- checks against one instance

def wait_ready(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> float:
    """Seconds until ``GET url/readyz`` answered 200; DeployError on timeout or process exit."""
    start = time.monotonic()
    last = "no answer"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if (rc := proc.poll()) is not None:
                raise DeployError(f"the instance exited with code {rc} before it was ready; "
                                  f"log {log_path}:\n{_tail(log_path)}")
            try:
                resp = client.get(f"{url}/readyz")
                if resp.status_code == 200:
                    return time.monotonic() - start
                last = f"HTTP {resp.status_code} {resp.text.strip()[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() - start > timeout:
                raise DeployError(f"readiness timeout: {url}/readyz did not answer 200 within {timeout:g} s "
                                  f"(last answer: {last}); log {log_path}")
            time.sleep(0.25)


SMOKE_HEADER = "X-ReviewOps-Smoke"  # the service logs these answers with a "smoke-" request id: not live traffic


def smoke(url: str, photos: list[GoldenPhoto], env: dict | None = None) -> list[str]:
    """POST every golden photo to ``url/review``; the list of mismatches (empty: all match).

    With a token in ``env`` (or this process's environment) the smoke requests carry it, as callers would.
    """
    failures = []
    token = (env or {}).get(TOKEN_ENV) or os.environ.get(TOKEN_ENV)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=SMOKE_TIMEOUT_S, trust_env=False, headers=auth) as client:
        for p in photos:
            name = p.file.name + (f" (listing {p.fields['listing_id']})" if "listing_id" in p.fields else "")
            mime = mimetypes.guess_type(p.file.name)[0] or "application/octet-stream"
            try:
                resp = client.post("/review", data=p.fields, files={"photo": (p.file.name, p.file.read_bytes(), mime)},
                                   headers={SMOKE_HEADER: "1"})
            except httpx.HTTPError as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if resp.status_code != 200:
                failures.append(f"{name}: HTTP {resp.status_code}: {resp.text.strip()[:300]}")
                continue
            try:
                body = resp.json()
                got = (body["decision"], tuple(sorted(body.get("reasons") or [])))
            except (ValueError, KeyError, TypeError) as exc:
                failures.append(f"{name}: unreadable answer ({exc}): {resp.text.strip()[:300]}")
                continue
            if got != (p.decision, p.reasons):
                failures.append(f"{name}: expected {p.decision} {list(p.reasons)}, got {got[0]} {list(got[1])}")
    return failures


# ---------------------------------------------------------------- the flow

def deploy(bento_tag: str, *, state_dir: Path, port: int, golden: Path | None = None,
           ready_timeout: float = 300, env: dict | None = None) -> dict:
    """Blue/green deploy ``bento_tag`` behind the router on 127.0.0.1:``port``; raises DeployError on failure."""
    state_dir = Path(state_dir)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    with _lock(state_dir):
        start = time.monotonic()
        try:
            tag, bento_path = resolve_bento(bento_tag, env)
            photos = load_golden(Path(golden) if golden else default_golden(bento_path))
        except DeployError as exc:
            _record(state_dir, bento=bento_tag, outcome="failed", reason=str(exc))
            raise
        old = read_active(state_dir)
        try:
            router_pid = ensure_router(state_dir, port)
        except RuntimeError as exc:
            _record(state_dir, bento=tag, outcome="failed", reason=f"router: {exc}")
            raise DeployError(f"router: {exc}") from exc
        if old and old.get("bento") == tag and pid_alive(old.get("pid")) and _ready(old["url"]):
            msg = f"{tag} is already active (since {old.get('since')}); nothing to do"
            _record(state_dir, bento=tag, outcome="noop", reason=msg)
            return {"outcome": "noop", "bento": tag, "url": old["url"], "pid": old["pid"],
                    "router_pid": router_pid, "port": port, "message": msg}
        proc, url, log_path = _start(tag, bento_path, state_dir, env)
        switched = False
        try:
            ready_s = wait_ready(url, proc, ready_timeout, log_path)
            failures = smoke(url, photos, env)
            if failures:
                raise DeployError(f"smoke test failed on {len(failures)} of {len(photos)} golden photos: "
                                  + "; ".join(failures))
            write_active(state_dir, tag, url, proc.pid)
            switched = True
            _confirm_switch(port, url)
        except BaseException as exc:
            if switched:
                _restore(state_dir, old)
            stop_group(proc.pid, STOP_GRACE_S)
            reason = str(exc) if isinstance(exc, DeployError) else f"{type(exc).__name__}: {exc}"
            _record(state_dir, bento=tag, outcome="failed", reason=reason, log=str(log_path))
            if isinstance(exc, DeployError) or not isinstance(exc, Exception):
                raise
            raise DeployError(reason) from exc
        stopped_old = False
        if old and old.get("pid") != proc.pid and pid_alive(old.get("pid")):
            time.sleep(DRAIN_S)             # requests already sent to the old instance finish there
            stopped_old = stop_group(old["pid"], STOP_GRACE_S, expect="bentoml")
        result = {"outcome": "deployed", "bento": tag, "url": url, "pid": proc.pid, "port": port,
                  "router_pid": router_pid, "previous": old.get("bento") if old else None,
                  "stopped_previous": stopped_old, "ready_s": round(ready_s, 2), "smoke_photos": len(photos),
                  "seconds": round(time.monotonic() - start, 2), "log": str(log_path)}
        result["message"] = (f"deployed {tag}: serving on 127.0.0.1:{port} via {url} after {len(photos)} golden "
                             f"photos matched" + (f"; stopped {result['previous']}" if stopped_old else ""))
        _record(state_dir, bento=tag, outcome="deployed", reason=f"{len(photos)} golden photos matched",
                previous=result["previous"], url=url)
        return result


def stop_all(state_dir: Path) -> dict:
    """Stop the router and the active instance (traffic first, then the instance)."""
    state_dir = Path(state_dir)
    router = stop_router(state_dir)
    active = read_active(state_dir)
    instance = stop_group(active.get("pid"), STOP_GRACE_S, expect="bentoml") if active else False
    (state_dir / ACTIVE).unlink(missing_ok=True)
    if router or instance:
        _record(state_dir, bento=active.get("bento") if active else None, outcome="stopped", reason="stop_all")
    return {"router_stopped": router, "instance_stopped": instance, "bento": active.get("bento") if active else None}


def status(state_dir: Path) -> dict:
    """The router, the active instance (alive, ready) and the last deploy record."""
    state_dir = Path(state_dir)
    active = read_active(state_dir)
    if active:
        alive = pid_alive(active.get("pid"))
        active = {**active, "alive": alive, "ready": alive and _ready(active["url"])}
    history = _history(state_dir)
    return {"state_dir": str(state_dir), "router": router_status(state_dir), "active": active,
            "last": history[-1] if history else None}


# ---------------------------------------------------------------- helpers

def _bentoml_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("bentoml")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bentoml"]


def _start(tag: str, bento_path: Path, state_dir: Path, env: dict | None) -> tuple[subprocess.Popen, str, Path]:
    """``bentoml serve TAG`` on a free loopback port, detached, in the Bento's directory."""
    port = free_port()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_path = state_dir / "logs" / f"{tag.replace(':', '-')}-{stamp}-{port}.log"
    full_env = {"BENTOML_DO_NOT_TRACK": "true", **os.environ, **{k: str(v) for k, v in (env or {}).items()}}
    full_env["BENTOML_HOME"] = str(_instance_home(state_dir, port, full_env.get("BENTOML_HOME")))
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([*_bentoml_cmd(), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=bento_path, env=full_env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log_path


def _instance_home(state_dir: Path, port: int, shared: str | None) -> Path:
    """A ``BENTOML_HOME`` of the instance's own: the shared store's bentos and models linked in, its own metrics.

    BentoML empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when a server starts and every server of a home
    reads all of it: with one home, the colour being deployed would erase the serving colour's counters
    mid-switch, and both would then report each other's requests.
    """
    store = Path(shared or Path.home() / "bentoml").resolve()
    home = state_dir / "homes" / str(port)
    home.mkdir(parents=True, exist_ok=True)
    for name in ("bentos", "models", "envs"):
        (store / name).mkdir(parents=True, exist_ok=True)
        link = home / name
        if link.is_symlink() and link.resolve() != store / name:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(store / name, target_is_directory=True)
    return home


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _confirm_switch(port: int, url: str, timeout: float = 5.0) -> None:
    """Wait until the router reports ``url`` as its upstream."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = (httpx.get(f"http://127.0.0.1:{port}/-/router", timeout=2.0, trust_env=False).json()
                    .get("active") or {}).get("url")
            if seen == url:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise DeployError(f"the router on port {port} did not switch to {url} (it reports {seen})")


def _restore(state_dir: Path, old: dict | None) -> None:
    if old:
        write_json_atomic(state_dir / ACTIVE, old)
    else:
        (state_dir / ACTIVE).unlink(missing_ok=True)


@contextmanager
def _lock(state_dir: Path) -> Iterator[None]:
    with open(state_dir / "deploy.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeployError(f"another deploy is running in {state_dir}") from None
        yield


def _record(state_dir: Path, *, bento: str | None, outcome: str, reason: str, **extra: Any) -> None:
    line = {"time": now_iso(), "bento": bento, "outcome": outcome, "reason": reason, **extra}
    with open(state_dir / HISTORY, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def _history(state_dir: Path) -> list[dict]:
    path = state_dir / HISTORY
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
