"""The fields a benchmarks/results file opens with: the command that made it, the date, the machine and this
checkout's revision. Imported by the scripts beside it (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path


def header(command: str) -> dict:
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    return {"command": command, "date": datetime.date.today().isoformat(), "machine": platform.machine(),
            "code_revision": revision}
