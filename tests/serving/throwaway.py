"""Throw-away virtual environments for tools the tests run but the project does not depend on.

A client generator or an API fuzzer brings its own dependency set (ruff, hypothesis, a pinned httpx...);
installing it into the project's venv could move the project's own pins. :func:`make_env` makes a fresh
venv with the project venv's ``uv`` (from PyPI, uv's cache makes a repeat quick) and returns its directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

UV = Path(sys.executable).parent / "uv"


def _uv(*args: str, timeout: float = 600) -> None:
    done = subprocess.run([str(UV), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"uv {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def make_env(base: Path, *packages: str) -> Path:
    """A new Python 3.11 venv at ``base`` (created if missing) with ``packages`` (pip requirement strings,
    paths included) installed; returns ``base``. AssertionError with uv's output when uv fails."""
    base = Path(base)
    if not (base / "bin" / "python").exists():
        _uv("venv", "-q", "-p", "3.11", str(base))
    if packages:
        install(base, *packages)
    return base


def install(env: Path, *packages: str) -> None:
    """Install ``packages`` into the throw-away venv ``env`` (never the project's)."""
    _uv("pip", "install", "-q", "--python", str(Path(env) / "bin" / "python"), *packages)


def bin_path(env: Path, name: str) -> Path:
    return Path(env) / "bin" / name
