"""Versioning with DVC, in a real temporary git + DVC repo with a local-directory remote: no mocks."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from pipelines.data.dataset import frozen_test_ids, frozen_test_phashes, split_frame, versioned_manifest
from pipelines.data.generate import generate_batch
from pipelines.data.manifest import read_manifest
from pipelines.params import load_params
from pipelines.data.version import (VersionError, checkout_version, dvc, ensure_dvc_repo, format_outcome,
                               repo_lock, version_batch)

N = 30
PROJECT = Path(__file__).resolve().parents[2]


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repo with two versioned batches; yields what each step left behind."""
    base = tmp_path_factory.mktemp("version")
    repo, remote = base / "repo", base / "remote"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "config", "user.name", "ReviewOps Test")
    sh(repo, "git", "config", "user.email", "test@reviewops.invalid")
    (repo / ".gitignore").write_text("/data/incoming/\n/data/quarantine/\n/.dvc-remote/\n")
    sh(repo, "git", "add", ".gitignore")
    sh(repo, "git", "commit", "-q", "-m", "init")
    params = load_params(PROJECT / "params.yaml")
    incoming = repo / "data" / "incoming"
    state = {"repo": repo, "remote": remote, "params": params, "outcomes": [], "versioned": [], "images": []}
    for batch_id, seed in (("b1", 1), ("b2", 2)):
        src = generate_batch(incoming, batch_id, N, seed, params=params, workers=1)
        state["images"].append(tree_hashes(src / "images"))
        outcome = version_batch(src, repo=repo, params=params, remote=str(remote))
        state["outcomes"].append(outcome)
        state["versioned"].append(tree_hashes(outcome.dest))
        if batch_id == "b1":
            state["test_split"] = (repo / "data" / "test_split.json").read_bytes()
    return state


def test_two_batches_freeze_the_test_split_once(project):
    repo, (o1, o2) = project["repo"], project["outcomes"]
    assert o1.first_batch and not o2.first_batch
    assert o1.pushed and o2.pushed and o1.remote == str(project["remote"])
    assert o1.n_rows == o2.n_rows == N and o1.splits["test"] > 0 and o2.splits["test"] == 0
    assert sum(o2.splits.values()) == N and o2.splits["train"] > 0
    assert not (repo / "data" / "incoming" / "b1").exists()
    for outcome, images in zip(project["outcomes"], project["images"]):  # photos moved untouched
        assert tree_hashes(outcome.dest / "images") == images
        assert outcome.dvc_file.exists()
    assert (repo / "data" / "test_split.json").read_bytes() == project["test_split"]

    m1 = read_manifest(o1.dest)
    frozen = json.loads(project["test_split"])
    assert frozen["batch"] == "b1" and frozen["listing_ids"] == sorted(m1.listing_id[m1.split == "test"])
    test_rows = m1[m1.split == "test"].sort_values("listing_id")
    assert frozen_test_phashes(repo) == test_rows.phash.tolist()

    log = sh(repo, "git", "log", "--format=%H %s").splitlines()
    assert [line.split(" ", 1)[1] for line in log] == [f"data: version batch b2 ({N} photos)",
                                                        f"data: version batch b1 ({N} photos)", "init"]
    assert [o2.commit, o1.commit] == [line.split()[0] for line in log[:2]]
    assert sh(repo, "git", "status", "--porcelain") == ""
    assert set(sh(repo, "git", "ls-files", "data").split()) == {
        "data/batches/.gitignore", "data/batches/b1.dvc", "data/batches/b2.dvc", "data/test_split.json"}

    df = versioned_manifest(repo)
    assert len(df) == 2 * N and list(df.batch.unique()) == ["b1", "b2"]
    assert all(Path(p).is_file() for p in df.path)
    assert sorted(split_frame(df, "test").listing_id) == frozen_test_ids(repo) == frozen["listing_ids"]
    assert "versioned: 30 photos" in format_outcome(o1) and "froze the test split" in format_outcome(o1)


def test_checkout_first_version_is_byte_identical(project):
    repo, (o1, o2) = project["repo"], project["outcomes"]
    shutil.rmtree(o1.dest)  # the first batch's data must come back from the DVC cache
    try:
        sh(repo, "git", "checkout", "-q", o1.commit)
        dvc(repo, "checkout")
        assert tree_hashes(o1.dest) == project["versioned"][0]
        assert not o2.dest.exists() and not o2.dvc_file.exists()  # DVC drops what o1 does not track
        assert len(versioned_manifest(repo)) == N
        assert (repo / "data" / "test_split.json").read_bytes() == project["test_split"]
    finally:
        checkout_version("main", repo=repo)
    assert [tree_hashes(o.dest) for o in (o1, o2)] == project["versioned"]
    assert sh(repo, "git", "status", "--porcelain") == ""
    assert sh(repo, "git", "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_fresh_clone_pulls_every_file_back(project, tmp_path):
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project["repo"]), str(clone))
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        versioned_manifest(clone)
    assert ensure_dvc_repo(clone, remote=str(project["remote"])) == str(project["remote"])
    dvc(clone, "pull", "-q")
    assert [tree_hashes(clone / "data" / "batches" / b) for b in ("b1", "b2")] == project["versioned"]
    assert frozen_test_ids(clone) == frozen_test_ids(project["repo"])


def _snapshot(repo: Path) -> tuple:
    return (sh(repo, "git", "rev-parse", "HEAD"), sh(repo, "git", "status", "--porcelain", "--ignored"),
            tree_hashes(repo / "data" / "batches"), (repo / "data" / "test_split.json").read_bytes())


def test_existing_batch_id_is_refused_and_nothing_changes(project, tmp_path):
    repo, params = project["repo"], project["params"]
    before = _snapshot(repo)
    other = generate_batch(tmp_path / "other", "b1", 10, seed=99, params=params, workers=1)
    other_files = tree_hashes(other)
    with pytest.raises(VersionError, match="already versioned .* other content"):
        version_batch(other, repo=repo, params=params, remote=str(project["remote"]))
    assert _snapshot(repo) == before and tree_hashes(other) == other_files

    # the same content again (a retried task) is reported, not an error, and changes nothing
    same = generate_batch(tmp_path / "same", "b1", N, seed=1, params=params, workers=1)
    again = version_batch(same, repo=repo, params=params, remote=str(project["remote"]), push=False)
    assert again.already_versioned and again.commit == project["outcomes"][0].commit
    assert again.splits == project["outcomes"][0].splits and "nothing changed" in format_outcome(again)
    assert _snapshot(repo) == before and same.exists()


def test_failed_commit_puts_everything_back(project):
    repo, params = project["repo"], project["params"]
    src = generate_batch(repo / "data" / "incoming", "b3", 10, seed=3, params=params, workers=1)
    files, before = tree_hashes(src), _snapshot(repo)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'refused by test hook' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        with pytest.raises(VersionError, match="refused by test hook"):
            version_batch(src, repo=repo, params=params, remote=str(project["remote"]))
    finally:
        hook.unlink()
    assert tree_hashes(src) == files and _snapshot(repo) == before

    # a .gitignore that hides data/batches/ itself is refused before anything moves
    gitignore = repo / ".gitignore"
    saved = gitignore.read_bytes()
    gitignore.write_bytes(saved + b"/data/batches/\n")
    try:
        with pytest.raises(VersionError, match="git-ignored"):
            version_batch(src, repo=repo, params=params, remote=str(project["remote"]))
    finally:
        gitignore.write_bytes(saved)
    assert tree_hashes(src) == files and _snapshot(repo) == before
    shutil.rmtree(src)


def test_one_dvc_writer_per_work_tree(project):
    errors = []

    def contender():
        try:
            with repo_lock(project["repo"], timeout=0.2):
                errors.append(None)
        except VersionError as err:
            errors.append(str(err))

    with repo_lock(project["repo"]), repo_lock(project["repo"]):  # re-entrant in one thread
        worker = threading.Thread(target=contender)
        worker.start()
        worker.join()
    assert "must not run side by side" in errors[0]
    worker = threading.Thread(target=contender)
    worker.start()
    worker.join()
    assert errors[1] is None


def test_project_gitignore_lets_dvc_pointers_be_committed(tmp_path):
    """The project's own .gitignore must not hide data/batches/ID.dvc (DVC refuses to write it then)."""
    shutil.copy(PROJECT / ".gitignore", tmp_path / ".gitignore")
    sh(tmp_path, "git", "init", "-q")
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/batches/b1.dvc"], cwd=tmp_path).returncode == 0
    assert not ignored, "the root .gitignore ignores data/batches/ itself: drop that line (DVC ignores each batch)"
