"""DVC's S3 remote, really run: a batch versioned and pushed from one clone, pulled byte-identical into another.

No S3 endpoint is reachable here, so moto's S3-compatible HTTP server (``moto[server]`` from PyPI, the ``scale``
extra) runs on a free loopback port in its own process group, in the place of the real service; DVC, dvc-s3,
s3fs and botocore are the real ones. The project is configured the way the platform team configures it for S3:

    REVIEWOPS_DVC_REMOTE=s3://BUCKET/store       # pipelines/data/version.py: remote "storage" in .dvc/config.local
    AWS_ENDPOINT_URL_S3=http://127.0.0.1:PORT    # botocore's own endpoint setting (unset for AWS itself)
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION

Credentials and endpoint live only in the environment: nothing of them reaches a file git tracks.
``benchmarks/scaleout_s3.py`` times the same round trip on a larger batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipelines.data.generate import generate_batch
from pipelines.data.version import (REMOTE_ENV, VersionError, VersionOutcome, dvc, ensure_dvc_repo, repo_lock,
                                    version_batch)
from pipelines.params import load_params
from tests.conftest import new_repo
from tests.scaleout.services import free_port, start_s3_server

PROJECT = Path(__file__).resolve().parents[2]
N = 24  # photos in the test's batch (plus its manifest): enough files for a real round trip, quick to render
PREFIX = "store"  # the remote's path inside the bucket


# ------------------------------------------------------------------------------------------- the S3 server

def aws_env(endpoint: str, bucket: str, key_id: str, secret: str, home: Path) -> dict[str, str]:
    """The machine configuration of an S3 remote: the project's remote URL plus AWS's standard variables.
    AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE point at nothing so that no ~/.aws of this machine joins in."""
    return {REMOTE_ENV: f"s3://{bucket}/{PREFIX}", "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"), "DVC_NO_ANALYTICS": "1"}


@contextmanager
def environ(values: dict[str, str]):
    """``os.environ`` with ``values`` (and without other AWS profile/endpoint settings), restored afterwards."""
    drop = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN")
    saved = {k: os.environ.get(k) for k in (*values, *drop)}
    for k in drop:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_client(env: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def bucket_objects(client, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


# ------------------------------------------------------------------------------------------- the project

def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def new_project(repo: Path) -> Path:
    """What ``tests/conftest.py::make_project`` makes, without its local-directory remote and data."""
    return new_repo(repo, "tiny")


def version_new_batch(repo: Path, batch_id: str, n: int, seed: int, workers: int = 2) -> VersionOutcome:
    """Render a batch into data/incoming and version it with the remote of the environment (add, commit, push)."""
    params = load_params(repo / "params.yaml")
    src = generate_batch(repo / "data" / "incoming", batch_id, n, seed, params=params, workers=workers)
    return version_batch(src, repo=repo, params=params)


def pull(repo: Path) -> None:
    """What a worker does with a fresh checkout: the remote from its environment, then ``dvc pull``."""
    ensure_dvc_repo(repo)
    with repo_lock(repo):
        dvc(repo, "pull")  # not -q: DVC's -q also silences the error that says why a pull failed


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected_keys(repo: Path, dvc_file: Path) -> dict[str, int]:
    """The remote's object keys for one pointer, from DVC's own record: the directory listing (``.dir``) and one
    object per distinct file hash in it; values: the files of the batch each object stands for."""
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    dir_hash = out["md5"]
    listing = json.loads((repo / ".dvc" / "cache" / "files" / "md5" / dir_hash[:2] / dir_hash[2:]).read_text())
    keys = {f"{PREFIX}/files/md5/{dir_hash[:2]}/{dir_hash[2:]}": 0}
    for entry in listing:
        key = f"{PREFIX}/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}"
        keys[key] = keys.get(key, 0) + 1
    assert len(listing) == out["nfiles"]
    return keys


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The S3 server, a bucket on it, and the environment a worker of the project would have."""
    base = tmp_path_factory.mktemp("s3")
    server = start_s3_server(base)
    bucket = f"reviewops-dvc-{secrets.token_hex(4)}"
    env = aws_env(server.endpoint, bucket, "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20), base)
    try:
        s3_client(env).create_bucket(Bucket=bucket)
        yield {"server": server, "bucket": bucket, "env": env, "base": base}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pushed(s3, tmp_path_factory):
    """Clone 1: a project whose batch was versioned and pushed to the bucket."""
    repo = new_project(tmp_path_factory.mktemp("clone1") / "repo")
    with environ(s3["env"]):
        start = time.perf_counter()
        outcome = version_new_batch(repo, "s3-b1", N, seed=5)
        seconds = time.perf_counter() - start
    return {"repo": repo, "outcome": outcome, "seconds": seconds}


# ------------------------------------------------------------------------------------------- tests

def test_batch_pushed_from_one_clone_pulls_byte_identical_into_another(s3, pushed, tmp_path):
    repo, outcome, env, bucket = pushed["repo"], pushed["outcome"], s3["env"], s3["bucket"]
    assert outcome.pushed and outcome.remote == f"s3://{bucket}/{PREFIX}"
    source = tree_hashes(outcome.dest)
    assert len(source) == N + 1  # the photos and the manifest

    # The bucket holds exactly the batch: one object per file (plus DVC's directory listing), each with its bytes.
    keys = expected_keys(repo, outcome.dvc_file)
    objects = bucket_objects(s3_client(env), bucket)
    assert set(objects) == set(keys)
    assert sum(keys.values()) == len(source) == len(objects) - 1
    for key, body in objects.items():
        assert hashlib.md5(body).hexdigest() == key.split("/")[-2] + key.split("/")[-1].removesuffix(".dir")

    # The remote and its credentials are machine configuration: nothing of them is in git.
    assert sh(repo, "git", "status", "--porcelain") == ""
    tracked = sh(repo, "git", "ls-files").split("\n")
    for rel in tracked:
        text = (repo / rel).read_bytes()
        for value in (env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"], env["AWS_ENDPOINT_URL_S3"], bucket):
            assert value.encode() not in text, f"{value!r} written into git-tracked {rel}"
    local = (repo / ".dvc" / "config.local").read_text()
    assert f"s3://{bucket}/{PREFIX}" in local and env["AWS_SECRET_ACCESS_KEY"] not in local

    # Clone 2: git clone of clone 1, data pulled from the bucket, byte for byte the same.
    clone = tmp_path / "clone2"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / outcome.dest.relative_to(repo)).exists()
    with environ(env):
        pull(clone)
    pulled = tree_hashes(clone / outcome.dest.relative_to(repo))
    assert pulled == source
    assert sh(clone, "git", "status", "--porcelain") == ""
    assert (clone / "data" / "test_split.json").read_bytes() == (repo / "data" / "test_split.json").read_bytes()


def test_pull_from_an_unreachable_remote_fails_and_writes_nothing(s3, pushed, tmp_path):
    repo, outcome = pushed["repo"], pushed["outcome"]
    clone = tmp_path / "clone3"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dead = {**s3["env"], "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    start = time.perf_counter()
    with environ(dead), pytest.raises(VersionError) as err:
        pull(clone)
    took = time.perf_counter() - start
    message = str(err.value)
    assert "dvc pull failed" in message and "Could not connect to the endpoint URL" in message, message
    assert took < 90, f"failing took {took:.0f} s"
    batch = clone / outcome.dest.relative_to(repo)
    assert not batch.exists() or not any(batch.rglob("*")), "a failed pull left files in the work tree"
    assert sh(clone, "git", "status", "--porcelain", "--ignored", "data") == ""
    cache = clone / ".dvc" / "cache" / "files"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))

    # The same clone pulls once the endpoint is right again: the failure left nothing to clean up.
    with environ(s3["env"]):
        pull(clone)
    assert tree_hashes(batch) == tree_hashes(outcome.dest)


def test_push_to_an_unreachable_remote_says_so_and_a_retry_pushes(s3, pushed, tmp_path):
    """version_batch's documented contract with a remote that is down: versioned locally, the error says the push
    failed; versioning the batch again once the remote is back pushes it."""
    repo = new_project(tmp_path / "repo")
    # AWS_MAX_ATTEMPTS=1 (botocore's standard setting): fail at once instead of after botocore's retries,
    # which the pull test above sits through (about 10-40 s here)
    dead = {**s3["env"], "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    with environ(dead), pytest.raises(VersionError, match="versioned locally .* but the push to s3://") as err:
        version_new_batch(repo, "s3-b2", 6, seed=9)
    assert "Could not connect to the endpoint URL" in str(err.value), str(err.value)  # the error says why
    assert (repo / "data" / "batches" / "s3-b2.dvc").exists()
    with environ(s3["env"]):
        again = version_batch("s3-b2", repo=repo)
    assert again.already_versioned and again.pushed
    objects = bucket_objects(s3_client(s3["env"]), s3["bucket"])
    assert set(expected_keys(repo, again.dvc_file)) <= set(objects)


def test_with_verify_a_corrupted_object_is_refused_not_checked_out(s3, tmp_path):
    """DVC does not re-hash what it downloads unless the remote says ``verify = true``; with it (machine
    configuration: ``dvc remote modify --local storage verify true``), an object whose bytes no longer match its
    key fails the pull and nothing of the batch reaches the work tree."""
    bucket = f"reviewops-dvc-{secrets.token_hex(4)}"
    env = {**s3["env"], REMOTE_ENV: f"s3://{bucket}/{PREFIX}"}
    client = s3_client(env)
    client.create_bucket(Bucket=bucket)
    repo = new_project(tmp_path / "repo")
    with environ(env):
        outcome = version_new_batch(repo, "s3-b3", 4, seed=13, workers=1)
    victim = sorted(k for k in bucket_objects(client, bucket) if not k.endswith(".dir"))[0]
    client.put_object(Bucket=bucket, Key=victim, Body=b"not the photo")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    with environ(env):
        ensure_dvc_repo(clone)
        dvc(clone, "remote", "modify", "--local", "storage", "verify", "true")
        with pytest.raises(VersionError, match="Checkout failed"):
            pull(clone)
    assert not (clone / outcome.dest.relative_to(repo)).exists()
    assert sh(clone, "git", "status", "--porcelain") == ""
