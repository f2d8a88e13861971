"""The serving package's shared stack: the tiny project trained, gated, built and deployed on loopback.

Package-scoped, so the contract, client and reviewer tests share one deployed reviewer (modules run in
name order: the contract tests first, the reviewer tests that roll production back last).
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def stack_copy(stack, base: Path, what: str, **env):
    """A copy of the deployed stack (its repo and model store) on its own port, whose ``what`` path may not import
    torch: promotions there never reach the other serving tests. Yields repo, env, port, url, stack_url and
    deploy_env (env with a ``torch`` that raises on import first on PYTHONPATH); stops its instances after."""
    from pipelines.deploy.bluegreen import stop_all
    from pipelines.deploy.router import free_port

    repo, home = base / "repo", base / "bentoml"
    shutil.copytree(stack["repo"], repo, symlinks=True, ignore=shutil.ignore_patterns(".reviewops"))
    shutil.copytree(stack["env"]["BENTOML_HOME"], home, symlinks=True)
    no_torch = base / "no-torch"
    no_torch.mkdir()
    (no_torch / "torch.py").write_text(f"raise ImportError('torch imported on the {what} path')\n")
    env = {**stack["env"], "BENTOML_HOME": str(home), **env}
    port = free_port()
    try:
        yield {"repo": repo, "env": env, "port": port, "url": f"http://127.0.0.1:{port}", "stack_url": stack["url"],
               "deploy_env": {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(no_torch), env.get("PYTHONPATH")]))}}
    finally:
        stop_all(repo / ".reviewops" / "deploy")

