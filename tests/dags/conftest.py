"""Real Airflow for the DAG tests: its own AIRFLOW_HOME (SQLite) per session, the project's dags/ folder.

Airflow reads its configuration once per process, so every DAG run is a subprocess
(``tests/dags/dagrun.py``: ``dag.test()``) with this environment plus the project it works on.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
BIN = Path(sys.executable).parent
DAGRUN = Path(__file__).with_name("dagrun.py")
_runs = itertools.count(1)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
           # unpaused, an asset event queues a run of the DAGs it schedules (what the scheduler then starts)
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "BENTOML_DO_NOT_TRACK": "true"}
    for key in ("REVIEWOPS_ROOT", "BENTOML_HOME", "REVIEWOPS_PARAMS", "REVIEWOPS_PREDICTION_LOG"):
        env.pop(key, None)
    done = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return env


def run_dag(env: dict[str, str], dag_id: str, conf: dict | None = None, *, root: Path | None = None,
            bentoml_home: Path | None = None, timeout: float = 900) -> dict:
    """``dag.test()`` of ``dag_id`` in a subprocess; the run's state, task instances and asset events."""
    env = dict(env)
    if root is not None:
        env["REVIEWOPS_ROOT"] = str(root)
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(bentoml_home)
    log = Path(env["AIRFLOW_HOME"]) / "runs" / f"{next(_runs):02d}-{dag_id}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, str(DAGRUN), str(DAGS), dag_id, json.dumps(conf or {})], env=env,
                              cwd=log.parent, stdout=fh, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"dag.test({dag_id}) exited {done.returncode}; log {log}:\n{text[-6000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    result["log"] = str(log)
    return result


def tasks(result: dict, task_id: str) -> list[dict]:
    """The task instances of ``task_id`` in a run result (one per map index)."""
    return [ti for ti in result["tis"] if ti["task"] == task_id]


def only(result: dict, task_id: str) -> dict:
    (ti,) = tasks(result, task_id)
    return ti
