"""Shared fixtures: a real git + DVC project holding one versioned tiny batch, trained with the tiny profile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
# the tiny projects' prohibited categories: three of params.yaml's ten. Each category is its own dvc stages and its own
# head, so three show everything ten do, and each gets more of the 96 tiny photos (the whole suite's retrains ran
# 11 train_prohibited stages each before)
TEST_CATEGORIES = ["cash", "knife", "pills"]


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def new_repo(repo: Path, profile: str = "tiny") -> Path:
    """A new git repo holding the project's params.yaml (``train.profile`` = ``profile``), committed; no data yet."""
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "config", "user.name", "ReviewOps Test")
    sh(repo, "git", "config", "user.email", "test@reviewops.invalid")
    (repo / ".gitignore").write_text("/data/incoming/\n/data/quarantine/\n/.dvc-remote/\n/.cache/\n")
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["train"]["profile"] = profile
    raw["prohibited"]["categories"] = TEST_CATEGORIES
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(repo, "git", "add", ".gitignore", "params.yaml")
    sh(repo, "git", "commit", "-q", "-m", "init")
    return repo


def make_project(base: Path, profile: str = "tiny", n: int | None = None) -> Path:
    """A git repo with the project's params.yaml (train.profile = tiny) and one versioned batch."""
    from pipelines.data.generate import generate_batch
    from pipelines.params import load_params
    from pipelines.data.gallery import seed as seed_gallery
    from pipelines.data.version import version_batch

    repo = new_repo(base / "repo", profile)
    params = load_params(repo / "params.yaml")
    prof = params.data.profiles["tiny"]
    src = generate_batch(repo / "data" / "incoming", "tiny-b1", n or prof.n, prof.seed, params=params, workers=2)
    version_batch(src, repo=repo, params=params, remote=str(base / "remote"))
    seed_gallery(repo, params)
    return repo


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """Session-wide tiny project; tests that train copy it (``copy_project``) so they never interfere."""
    return make_project(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def copy_project(tiny_project, tmp_path):
    def _copy() -> Path:
        dest = tmp_path / "repo"
        shutil.copytree(tiny_project, dest, symlinks=True)
        return dest
    return _copy


def train_all(repo: Path) -> Path:
    """Train and evaluate every family, then the whole reviewer and the real-photo checks, in ``repo`` (tiny
    profile), as `dvc repro` would."""
    from pipelines.params import load_params
    from pipelines.release.real_photos import evaluate_real_photos
    from pipelines.release.reviewer import evaluate_reviewer
    from pipelines.train.families import FAMILIES, evaluate, train

    for family in FAMILIES:
        train(family, repo)
        evaluate(family, repo)
    evaluate_reviewer(repo, load_params(repo / "params.yaml"))
    evaluate_real_photos(repo, load_params(repo / "params.yaml"))
    return repo


def tiny_gate_params(repo: Path) -> None:
    """Gate floors for tiny data: 19 test photos leave most categories without a positive."""
    from pipelines.app.demo import open_gate

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    open_gate(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="session")
def trained_project(tiny_project, tmp_path_factory) -> Path:
    """A copy of the tiny project with all five families trained and evaluated (session-wide, read-only)."""
    dest = tmp_path_factory.mktemp("trained") / "repo"
    shutil.copytree(tiny_project, dest, symlinks=True)
    tiny_gate_params(dest)
    return train_all(dest)


@pytest.fixture(scope="session")
def webhook():
    """A local endpoint that keeps every drift alert POSTed to it (tests/monitoring/conftest.py)."""
    from tests.monitoring.conftest import Webhook

    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="session")
def monitored(trained_project, tmp_path_factory, webhook) -> dict:
    """The trained project gated into a model store, with normal and shifted traffic in its prediction log
    (tests/monitoring/conftest.py); here so that tests/monitoring and tests/dags share one."""
    from tests.monitoring.conftest import monitored_project

    return monitored_project(trained_project, tmp_path_factory.mktemp("monitoring"), webhook)
