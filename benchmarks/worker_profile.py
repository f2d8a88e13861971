"""Where the model worker's CPU goes under load: a py-spy profile of the checks process of deployed reviewer Bentos.

    # py-spy is a profiler, not a dependency of the project: install it beside the checkout, outside the venv
    .venv/bin/uv pip install --target /tmp/pyspy py-spy
    python benchmarks/worker_profile.py --root /tmp/demo --py-spy /tmp/pyspy/bin/py-spy \\
        --bento old=/tmp/demo/.bentoml:reviewops-reviewer:latest --bento new=/tmp/speed-new/.bentoml:reviewops-reviewer:TAG

For each Bento, in turn: ``reviewops deploy``'s blue/green deploy behind the front (as benchmarks/serving_speed.py
does), a warm-up at concurrency 16, then POST /review at concurrency 16 while py-spy samples the model worker
(``--process``: or the HTTP worker, or the front; ``--seconds``, 200 Hz, Python threads; ONNX Runtime's own threads are none here: one intra-op thread per session,
so its compute shows as the calling thread inside ``Session.run``). Written per Bento: the model worker's CPU ms per
photo over the profiled load (psutil), the share of samples whose stack passes through each top-level package
(inclusive), and the hottest leaf frames outside ONNX Runtime. Shares are of samples, so a thread waiting on a lock
may count as busy: compare them between Bentos of one run, not as absolute CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_header import header  # noqa: E402
from serving_speed import cpu_seconds, http_load, processes, test_photos  # noqa: E402

PACKAGES = ("onnxruntime", "pipelines", "asyncio", "uvicorn", "starlette", "_bentoml_impl", "_bentoml_sdk", "bentoml",
            "opentelemetry", "logging", "prometheus_client", "pydantic", "json", "numpy",
            # what the HTTP worker adds: the prediction log, photo decoding, the call to the model worker, forms
            "monitoring", "sqlalchemy", "PIL", "httpx", "aiohttp", "anyio", "multipart", "python_multipart")


ALIASES = {"asgi": "opentelemetry", "trace": "opentelemetry"}   # py-spy shortens opentelemetry's paths to these


def _package(frame: str) -> str:
    """The top-level package of a py-spy raw frame ``func (path/to/module.py:line)``."""
    path = frame.rsplit(" (", 1)[-1].split(":")[0]
    if path.split("/")[0] in ALIASES:
        return ALIASES[path.split("/")[0]]
    for name in PACKAGES:
        if f"/{name}/" in f"/{path}" or path.startswith(f"{name}/") or path == f"{name}.py":
            return name
    return path.split("/")[0]


def shares(raw: Path, top: int = 15) -> dict:
    """Inclusive share of samples per package and the hottest leaf frames outside ONNX Runtime, from py-spy's raw
    (collapsed stacks) output."""
    total, by_package, leaves = 0, Counter(), Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n, frames = int(count), stack.split(";")
        total += n
        for name in {_package(f) for f in frames}:
            by_package[name] += n
        if not any(_package(f) == "onnxruntime" for f in frames):
            leaves[frames[-1]] += n
    return {"samples": total,
            "package_share": {k: round(v / total, 4) for k, v in by_package.most_common() if k in PACKAGES},
            "hottest_outside_onnxruntime": [[k, round(v / total, 4)] for k, v in leaves.most_common(top)]}


def profile(name: str, home: Path, tag: str, photos: list[dict], args, work: Path) -> dict:
    from pipelines.deploy.bluegreen import deploy, resolve_bento, stop_all
    from pipelines.deploy.router import free_port

    env = {"BENTOML_HOME": str(home), "REVIEWOPS_ROOT": str(work / name)}
    (work / name).mkdir(parents=True, exist_ok=True)
    tag, _ = resolve_bento(tag, env)
    state, port = work / name / "deploy", free_port()
    print(f"{name}: deploying {tag} from {home}", flush=True)
    result = deploy(tag, state_dir=state, port=port, env=env, ready_timeout=300)
    url, raw = f"http://127.0.0.1:{port}", work / f"{name}.txt"
    try:
        procs = processes(result["router_pid"], result["pid"])
        http_load(url, photos, 5, 200, 16)                                      # warm-up
        spy = subprocess.Popen([args.py_spy, "record", "-p", str(procs[args.process].pid), "-d", str(args.seconds),
                                "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking"])
        time.sleep(1.0)                                                         # py-spy attached
        before = cpu_seconds(procs)
        load = http_load(url, photos, 1, int(args.seconds * 50), 16, warmup=0)
        after = cpu_seconds(procs)
        if spy.wait(timeout=args.seconds + 60) != 0:
            raise RuntimeError(f"py-spy failed on {name}")
    finally:
        stop_all(state)
    n = load["concurrent"]["n"]
    out = {"bento": tag, "process": args.process, "photos": n, "photos_per_s": load["concurrent"]["photos_per_s"],
           "errors": load["concurrent"]["errors"],
           "cpu_ms_per_photo": {k: round((after[k] - before[k]) / n * 1000, 2) for k in after}, **shares(raw)}
    print(f"  {name}: model worker {out['cpu_ms_per_photo']['model_worker']} ms CPU/photo, "
          f"{out['package_share']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the project whose test split gives the photos")
    ap.add_argument("--bento", action="append", required=True, metavar="NAME=HOME:TAG")
    ap.add_argument("--py-spy", default="py-spy")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--process", default="model_worker", choices=("model_worker", "http_worker", "router"),
                    help="the process py-spy samples (default: the model worker)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "worker_profile.json")
    args = ap.parse_args()
    photos = test_photos(args.root, 64)
    result = {**header("python benchmarks/worker_profile.py " + " ".join(sys.argv[1:])), "bentos": {}}
    with tempfile.TemporaryDirectory(prefix="worker-profile-") as tmp:
        for spec in args.bento:
            name, _, where = spec.partition("=")
            home, _, tag = where.partition(":")
            result["bentos"][name] = profile(name, Path(home), tag, photos, args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
