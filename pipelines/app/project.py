"""The project a DAG task works on, and how a task runs a command in it.

The project is ``root``, else ``$REVIEWOPS_ROOT``, else this checkout; its model and Bento store is
``$BENTOML_HOME``, else ``<root>/.bentoml``. Commands that import torch or bentoml run as ``dvc`` /
``reviewops`` subprocesses (:func:`run`) with that store, so a task process never mixes two model
stores and frees its memory on exit. Light at import: the DAG files parse the modules that import this.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Iterable

from pipelines.params import Params, load_params

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROGRESS_EVERY_S = 10.0               # a progress bar (carriage-return line) is echoed at most this often


def project_root(root: str | Path | None = None) -> Path:
    """The project the tasks work on: ``root``, else ``$REVIEWOPS_ROOT``, else this checkout."""
    return Path(root or os.environ.get("REVIEWOPS_ROOT") or PROJECT).resolve()


def bentoml_home(root: Path) -> Path:
    """The model and Bento store: ``$BENTOML_HOME``, else ``<root>/.bentoml`` (as ``registry.use_store``)."""
    return Path(os.environ.get("BENTOML_HOME") or Path(root) / ".bentoml").resolve()


def read_params(root: Path) -> Params:
    """The project's ``params.yaml``, the one its dvc.yaml stages read."""
    return load_params(Path(root) / "params.yaml")


def task_env(root: Path) -> dict[str, str]:
    """The environment of every subprocess: this interpreter's executables first, the project's stores."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "REVIEWOPS_ROOT": str(root), "BENTOML_HOME": str(bentoml_home(root)),
           "DVC_NO_ANALYTICS": "1", "BENTOML_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("REVIEWOPS_PARAMS", None)     # the project's own params.yaml, as dvc.yaml's stages read it
    return env


def run(cmd: list[str], root: Path, *, what: str, ok: Iterable[int] = (0,), echo: bool = True) -> tuple[int, str]:
    """Run ``cmd`` in ``root``, echoing its output as it comes (progress bars throttled); (exit code, tail).

    Raises RuntimeError (retryable) when the exit code is not in ``ok``.
    """
    print(f"$ {' '.join(cmd)}", flush=True)
    tail: deque[str] = deque(maxlen=60)
    proc = subprocess.Popen(cmd, cwd=root, env=task_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf, last_progress = b"", 0.0
    while chunk := proc.stdout.read1(65536):
        buf += chunk
        *parts, buf = re.split(rb"(\r\n|\n|\r)", buf)
        for text, sep in zip(parts[::2], parts[1::2]):
            line = text.decode(errors="replace").rstrip()
            if not line:
                continue
            if sep == b"\r":                    # a progress-bar refresh: echo now and then
                if time.monotonic() - last_progress < PROGRESS_EVERY_S:
                    continue
                last_progress = time.monotonic()
            tail.append(line)
            if echo:
                print(f"  {line}", flush=True)
    if buf.strip():
        tail.append(buf.decode(errors="replace").rstrip())
        if echo:
            print(f"  {tail[-1]}", flush=True)
    code = proc.wait()
    text = "\n".join(tail)
    if code not in tuple(ok):
        raise RuntimeError(f"{what} failed (exit {code}) in {root}:\n{text[-4000:]}")
    return code, text


def lock(root: Path, timeout: float | None = None):
    """``pipelines.data.version.repo_lock`` of ``root``: DVC, git and the model store, one task at a time."""
    from pipelines.data.version import repo_lock

    return repo_lock(root, timeout)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
