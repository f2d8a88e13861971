"""DVC's S3 remote round trip: a batch pushed from one clone, pulled into a fresh git clone, byte-identical.

    .venv/bin/python benchmarks/scaleout_s3.py --n 500   # writes benchmarks/results/scaleout_s3.json

The S3 service is moto's S3-compatible server (``moto[server]``, PyPI) on loopback, started here in its own
process group and stopped at the end; DVC, dvc-s3, s3fs and botocore are the real ones, configured as for any
S3 service: ``REVIEWOPS_DVC_REMOTE=s3://BUCKET/PREFIX``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` (helpers shared with ``tests/scaleout/test_s3_remote.py``).

One batch is rendered and versioned (``version_batch(push=False)``: move, phash, ``dvc add``, git commit); then,
``--rounds`` times, to a fresh prefix of the bucket: ``dvc push`` of its pointer (the command ``version_batch``
runs), ``git clone`` of the project, and ``dvc pull`` there (``ensure_dvc_repo`` + ``dvc pull``), each timed, and
every pulled file compared by SHA-256 with clone 1. Loopback has no network latency or bandwidth limit: the
figures are DVC's and the client's own cost per file, a floor for a real S3 service, not a forecast of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.data.generate import generate_batch  # noqa: E402
from pipelines.data.version import dvc, ensure_dvc_repo, repo_lock, version_batch  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from tests.scaleout.test_s3_remote import (aws_env, environ, expected_keys, new_project, pull, s3_client,  # noqa: E402
                                           sh, tree_hashes)
from tests.scaleout.services import start_s3_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="photos in the batch")
    ap.add_argument("--rounds", type=int, default=3, help="push/clone/pull rounds, each to a fresh prefix")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaleout_s3.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="scaleout-s3-") as tmp:
        base = Path(tmp)
        server = start_s3_server(base)
        try:
            bucket = "reviewops-dvc-bench"
            env = aws_env(server.endpoint, bucket, "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20), base)
            client = s3_client(env)
            client.create_bucket(Bucket=bucket)
            repo = new_project(base / "clone1")
            batch_id = f"s3-bench-{args.n}"
            with environ(env):
                params = load_params(repo / "params.yaml")
                src = generate_batch(repo / "data" / "incoming", batch_id, args.n, seed=3, params=params)
                start = time.perf_counter()
                outcome = version_batch(src, repo=repo, params=params, push=False)
                version_s = time.perf_counter() - start
            source = tree_hashes(outcome.dest)
            data_bytes = sum(p.stat().st_size for p in outcome.dest.rglob("*") if p.is_file())
            keys = expected_keys(repo, outcome.dvc_file)
            rounds = []
            for i in range(args.rounds):
                prefix = f"round{i}"
                renv = {**env, "REVIEWOPS_DVC_REMOTE": f"s3://{bucket}/{prefix}"}
                with environ(renv):
                    ensure_dvc_repo(repo)  # the remote of this round, in .dvc/config.local
                    start = time.perf_counter()
                    with repo_lock(repo):
                        dvc(repo, "push", str(outcome.dvc_file.relative_to(repo)))
                    push_s = time.perf_counter() - start
                    objs = [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                                          Prefix=prefix + "/")
                            for o in page.get("Contents", [])]
                    want = {prefix + k.removeprefix("store") for k in keys}
                    assert {o["Key"] for o in objs} == want, "the bucket does not hold exactly the batch"
                    clone = base / f"clone-r{i}"
                    start = time.perf_counter()
                    sh(base, "git", "clone", "-q", str(repo), str(clone))
                    clone_s = time.perf_counter() - start
                    start = time.perf_counter()
                    pull(clone)
                    pull_s = time.perf_counter() - start
                pulled = tree_hashes(clone / outcome.dest.relative_to(repo))
                identical = pulled == source
                assert identical, "pulled batch differs from the pushed one"
                rounds.append({"push_s": round(push_s, 2), "git_clone_s": round(clone_s, 2),
                               "pull_s": round(pull_s, 2), "objects": len(objs),
                               "object_bytes": sum(o["Size"] for o in objs), "byte_identical": identical})
        finally:
            server.stop()

    push_med = statistics.median(r["push_s"] for r in rounds)
    pull_med = statistics.median(r["pull_s"] for r in rounds)
    result = {
        "command": f"python benchmarks/scaleout_s3.py --n {args.n} --rounds {args.rounds}",
        "s3_service": "moto_server (moto[server] from PyPI) on 127.0.0.1, a stand-in for S3; threaded werkzeug",
        "remote": "REVIEWOPS_DVC_REMOTE=s3://reviewops-dvc-bench/roundN + AWS_ENDPOINT_URL_S3 (env only)",
        "versions": {p: version(p) for p in ("dvc", "dvc-s3", "s3fs", "aiobotocore", "botocore", "moto")},
        "photos": args.n,
        "files": len(source),
        "bytes": data_bytes,
        "version_without_push_s": round(version_s, 2),
        "rounds": rounds,
        "push_s_median": push_med,
        "pull_s_median": pull_med,
        "push_files_per_s": round(len(source) / push_med, 1),
        "pull_files_per_s": round(len(source) / pull_med, 1),
        "push_MB_per_s": round(data_bytes / 1e6 / push_med, 2),
        "pull_MB_per_s": round(data_bytes / 1e6 / pull_med, 2),
        "byte_identical": all(r["byte_identical"] for r in rounds),
        "note": "loopback: no network latency or bandwidth limit; the client's and DVC's own cost, not S3's",
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
