"""One inter-process file lock for every stage that must not run side by side (DVC/git, the registry, builds)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

LOCK_TIMEOUT_ENV = "REVIEWOPS_DVC_LOCK_TIMEOUT"
LOCK_TIMEOUT_S = 900.0


class LockTimeout(RuntimeError):
    """Another process held the lock for longer than the timeout."""


def lock_timeout(timeout: float | None) -> float:
    """``timeout``, else ``$REVIEWOPS_DVC_LOCK_TIMEOUT``, else an hour."""
    return float(timeout if timeout is not None else os.environ.get(LOCK_TIMEOUT_ENV, LOCK_TIMEOUT_S))


@contextmanager
def file_lock(path: Path, timeout: float | None, purpose: str, error: type[Exception] = LockTimeout):
    """Hold the lock file ``path`` (re-entrant within a thread); ``error`` says who waited too long and why."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = lock_timeout(timeout)
    lock = FileLock(str(path), is_singleton=True)  # one instance per path: re-entrant within a thread
    try:
        lock.acquire(timeout=seconds)
    except Timeout:
        raise error(f"another task has held {path} for over {seconds:g} s ({purpose}); "
                    f"DVC and git must not run side by side in one work tree. Wait for it to "
                    f"finish, or raise ${LOCK_TIMEOUT_ENV}") from None
    try:
        yield
    finally:
        lock.release()
