"""The serving package's shared stack: the tiny project trained, gated, built and deployed on loopback.

Package-scoped, so the contract, client and reviewer tests share one deployed reviewer (modules run in
name order: the contract tests first, the reviewer tests that roll production back last).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent


def cli(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "reviewops"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"reviewops {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="package")
def stack(trained_project, tmp_path_factory):
    from pipelines.deploy.router import free_port

    base = tmp_path_factory.mktemp("serving")
    repo = base / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("REVIEWOPS_PREDICTION_LOG", None)
    port = free_port()
    gate = cli(repo, env, "gate")
    build = cli(repo, env, "build")
    deploy = cli(repo, env, "deploy", "--port", str(port))
    yield {"repo": repo, "env": env, "url": f"http://127.0.0.1:{port}", "port": port, "gate": gate.stdout,
           "build": build.stdout, "deploy": deploy.stdout}
    from pipelines.deploy.bluegreen import stop_all
    stop_all(repo / ".reviewops" / "deploy")


@pytest.fixture(scope="package")
def client(stack):
    with httpx.Client(base_url=stack["url"], timeout=120, trust_env=False) as c:
        yield c


def photo(stack, i: int = 0) -> Path:
    return sorted((stack["repo"] / "data" / "batches" / "tiny-b1" / "images").glob("*.jpg"))[i]


def production(stack) -> dict:
    return json.loads((Path(stack["env"]["BENTOML_HOME"]) / "reviewops" / "production.json").read_text())


