"""Serving speed, old against new in one run: two reviewer Bentos deployed one after the other behind the front.

    # old: the Bento a default `make demo` deployed (its workspace's store); new: the same trained candidates
    # gated, registered and built with this checkout (--build-new: a scratch project linking the workspace's data,
    # models and metrics, with its own model store), or any other Bento given as --new HOME:TAG
    python benchmarks/serving_speed.py --root /tmp/demo \\
        --old /tmp/demo/.bentoml:reviewops-reviewer:latest --build-new /tmp/speed-new

For each side, in turn, on the same test-split photos: ``reviewops deploy``'s blue/green deploy (router on a free
loopback port, ``bentoml serve`` behind it, the golden smoke set) with the time from spawn to ``/readyz`` 200
(``cold_start_s``); POST /review through the front one at a time (p50, p90) and at concurrency 16 (photos/s,
p99, errors); the CPU seconds each process spent during the concurrent phase per photo (router, HTTP worker,
model worker, BentoML's parent) and their resident memory, beside what the same models need in process (every
unit one after another on one thread, at batch 1 and in batches of 8, and at batch 1 on both cores at once:
``graphs_cpu_ms_per_photo``); one photo at a
time again right after the burst
(``p50_ms_c1_after_burst``: BentoML's adaptive batching kept waiting as long as its recent batches waited); then
the side is stopped. In-process, the prohibited
check for one photo at 1, 5, 10, 20 and 40 categories, trunk included, built as each side's Bento serves it
(its params.yaml: trunk split, tail; random weights: the cost does not depend on them; FP32 on both sides).

Writes benchmarks/results/serving_speed.json (``old``, ``new``, and ``ratio`` new/old: on these shared machines the
ratios measured in one run are what count) and serving_speed.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CATEGORY_COUNTS = (1, 5, 10, 20, 40)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"      # this checkout's
ROLES = {"reviewops-checks": "model_worker", "reviewops-reviewer": "http_worker"}


def summary_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)},
            "mean_ms": round(float(ms.mean()), 1)}


def test_photos(root: Path, n: int) -> list[dict]:
    """``n`` photos of the frozen test split with the SKU their listing claims."""
    from pipelines.data.dataset import split_frame, versioned_manifest

    df = split_frame(versioned_manifest(root), "test").sort_values("listing_id").head(n)
    return [{"data": Path(r["path"]).read_bytes(), "name": Path(r["path"]).name, "path": r["path"],
             "sku_id": r["claimed_sku"] if isinstance(r["claimed_sku"], str) and r["claimed_sku"] else None,
             "listing_id": f"bench-{r['listing_id']}"} for _, r in df.iterrows()]


def post(client: httpx.Client, photo: dict) -> tuple[float, int]:
    fields = {k: photo[k] for k in ("sku_id", "listing_id") if photo[k]}
    started = time.perf_counter()
    r = client.post("/review", files={"photo": (photo["name"], photo["data"], "image/jpeg")}, data=fields)
    elapsed = time.perf_counter() - started
    return elapsed, (-1 if r.status_code == 200 and "decision" not in r.json() else r.status_code)


def http_load(url: str, photos: list[dict], sequential: int, concurrent: int, concurrency: int,
              between=lambda: None, warmup: int = 5) -> dict:
    """``warmup`` untimed requests (the first ones pay lazy initialisation), ``sequential`` requests one at a time,
    then ``between()``, then ``concurrent`` requests ``concurrency`` at a time (a request times out after 120 s)."""
    with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
        for photo in photos[:warmup]:
            post(client, photo)
        single = [post(client, photos[i % len(photos)]) for i in range(sequential)]
    between()
    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120, trust_env=False)
        return post(local.client, photos[i % len(photos)])

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        many = list(pool.map(one, range(concurrent)))
    wall = time.perf_counter() - started
    if not many:
        return {"single": {"concurrency": 1, **summary_ms([t for t, _ in single]),
                           "errors": sum(c != 200 for _, c in single)}}
    return {"single": {"concurrency": 1, **summary_ms([t for t, _ in single]),
                       "errors": sum(c != 200 for _, c in single)},
            "concurrent": {"concurrency": concurrency, **summary_ms([t for t, _ in many]),
                           "errors": sum(c != 200 for _, c in many), "wall_s": round(wall, 2),
                           "photos_per_s": round(len(many) / wall, 2)}}


def processes(router_pid: int, bento_pid: int) -> dict[str, psutil.Process]:
    """The front, BentoML's parent and its two workers, by role."""
    out = {"router": psutil.Process(router_pid), "bentoml_parent": psutil.Process(bento_pid)}
    for child in out["bentoml_parent"].children(recursive=True):
        args = child.cmdline()
        if "--service-name" in args:
            out[ROLES.get(args[args.index("--service-name") + 1], args[args.index("--service-name") + 1])] = child
    return out


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: sum(p.cpu_times()[:2]) for role, p in procs.items()}


def prohibited_latency(params_path: Path, shared: bool, repeats: int, threads: int = 1) -> dict[str, float]:
    """ms for the prohibited check of one photo at each count of categories, trunk included, as served by a Bento
    with ``params_path``: one whole graph (``shared`` False: before the shared trunk) or the trunk's stages and the
    categories' graph (``shared``); on a shared neck (``train.prohibited.neck``) each category is its light head."""
    import onnxruntime as ort
    import torch

    from pipelines.params import Params
    from pipelines.release.export import _export_graph
    from pipelines.release.quantize import median_ms
    from pipelines.train.graphs import Graph
    from pipelines.train.onnx_export import export_dynamic_batch
    from prohibited_tail_latency import combined        # every category's weights its own, as trained ones are

    raw = yaml.safe_load(params_path.read_text())       # an older Bento's params lack settings added since: ours
    ours = yaml.safe_load(PARAMS.read_text())           # (and may hold some removed since: dropped)
    params = Params.model_validate(_with_new_keys(_known_keys(raw, ours), ours))
    settings = raw["train"]["prohibited"]
    size = params.train.input_size("prohibited")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    out = {}
    for n in CATEGORY_COUNTS:
        module = combined(settings["trunk_split"], "neck" if settings.get("neck") else settings.get("tail_stages"), n)
        with tempfile.TemporaryDirectory() as tmp:
            if shared:
                meta = _export_graph(Graph("prohibited", module, size, "scores", labels=module.categories), Path(tmp))
                files = [s["file"] for s in meta["trunk"]] + [meta["file"]]
            else:
                files = ["whole.onnx"]
                export_dynamic_batch(module, torch.zeros(2, 3, size, size), Path(tmp) / files[0], "photos", "out")
            chain = [ort.InferenceSession(str(Path(tmp) / f), options, providers=["CPUExecutionProvider"])
                     for f in files]

            def run():
                y = x
                for session in chain:
                    y = session.run(None, {session.get_inputs()[0].name: y})[0]
                return y

            out[str(n)] = round(median_ms(run, repeats), 2)
        print(f"  prohibited x{n}: {out[str(n)]} ms", flush=True)
    return out


def graphs_cpu_ms(home: Path, bento_src: Path, paths: list[str], rounds: int = 3) -> dict:
    """What the Bento's models need per photo in process, as CPU ms (median over photos and ``rounds``): every unit
    (YOLO, each trunk stage, each family graph) one after another on one thread, at batch 1 (``serial_batch1``, issue
    21's "what the graphs need at batch 1") and in batches of 8 (``serial_batch8``), at batch 1 on two threads at once
    (``serial_batch1_both_cores``: what they need with both cores busy, as under load); and the process's CPU per photo
    of ``ReviewerModels.infer`` (two threads, as the model worker runs it) one photo at a time and in batches of 8.
    Loaded as the model worker loads them (each unit at the precision its bundle names)."""
    from batch_cpu import both_cores
    from reviewer_latency import per_photo
    from pipelines.serve.images import load_resized
    from pipelines.serve.models import ReviewerModels

    bundles = bundle_paths(home, bento_src)
    raw = yaml.safe_load((bento_src / "params.yaml").read_text())
    models = ReviewerModels(bundles, threads=2)
    x = load_resized(paths, int(raw["data"]["image_size"]))
    models.infer(x[:8])
    models.infer(x[:1])

    times: dict[str, list[float]] = {"serial_batch1": [], "serial_batch8": [], "infer_batch1": [], "infer_batch8": [],
                                     "serial_batch1_both_cores": []}
    for _ in range(rounds):
        for key, run in (("serial", models.infer_serial), ("infer", models.infer)):
            for batch in (1, 8):
                times[f"{key}_batch{batch}"] += per_photo(run, x, batch)[0]
        times["serial_batch1_both_cores"] += both_cores(models.infer_serial, x)[0]
    models.pool.shutdown()
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


def bundle_paths(home: Path, bento_src: Path) -> dict[str, Path]:
    """family -> the directory in the model store ``home`` of the bundle the Bento serves for it."""
    out = {}
    for family, tag in json.loads((bento_src / "production.json").read_text()).items():
        name, _, version = tag.partition(":")
        out[family] = home / "models" / name / version
    return out


def bundle_metas(home: Path, bento_src: Path) -> dict[str, dict]:
    """family -> the ``meta.json`` of the bundle the Bento serves for it."""
    return {family: json.loads((path / "meta.json").read_text()) for family, path in bundle_paths(home, bento_src).items()}


def serves_trunk_stages(metas: dict[str, dict]) -> bool:
    """Whether the Bento's prohibited model names trunk stages (this checkout's export) or is one graph."""
    return any("trunk" in g for g in metas["prohibited"]["graphs"].values())


def int8_units(metas: dict[str, dict]) -> list[str]:
    """The graphs and trunk stages the Bento's models serve as INT8 (``precision`` in their bundles' meta)."""
    from pipelines.release.quantize import entries

    return sorted({unit for meta in metas.values() for unit, e in entries(meta) if e.get("precision") == "int8"})


def one_side(name: str, home: Path, tag: str, photos: list[dict], args, work: Path) -> dict:
    from pipelines.deploy.bluegreen import deploy, resolve_bento, stop_all
    from pipelines.deploy.router import free_port

    env = {"BENTOML_HOME": str(home), "REVIEWOPS_ROOT": str(work / name)}
    (work / name).mkdir(parents=True, exist_ok=True)
    tag, bento_path = resolve_bento(tag, env)
    state = work / name / "deploy"
    port = free_port()
    print(f"{name}: deploying {tag} from {home} behind 127.0.0.1:{port}", flush=True)
    result = deploy(tag, state_dir=state, port=port, env=env, ready_timeout=300)
    url = f"http://127.0.0.1:{port}"
    try:
        procs = processes(result["router_pid"], result["pid"])
        before: dict[str, float] = {}
        load = http_load(url, photos, args.sequential, args.concurrent, args.concurrency,
                         between=lambda: before.update(cpu_seconds(procs)))
        after = cpu_seconds(procs)
        rss = {role: round(p.memory_info().rss / 2**20) for role, p in procs.items()}
        # one photo at a time again, right after the burst: BentoML's adaptive batching keeps the wait it learnt
        burst = http_load(url, photos, args.sequential // 2, 0, 1, warmup=0)["single"]
    finally:
        stop_all(state)
    n = load["concurrent"]["n"]
    c1, c16 = load["single"], load["concurrent"]
    side = {"bento": tag, "home": str(home), "cold_start_s": result["ready_s"],
            "p50_ms_c1": c1["p50_ms"], "p90_ms_c1": c1["p90_ms"],
            "p50_ms_c1_after_burst": burst["p50_ms"], "p90_ms_c1_after_burst": burst["p90_ms"],
            "photos_per_s_c16": c16["photos_per_s"], "p50_ms_c16": c16["p50_ms"],
            "p99_ms_c16": c16["p99_ms"], "errors": c1["errors"] + c16["errors"] + burst["errors"],
            "worker_rss_mb": rss.get("model_worker"), "rss_mb": rss,
            "cpu_ms_per_photo": {role: round((after[role] - before[role]) / n * 1000, 2) for role in after},
            "http": load}
    side["cpu_ms_per_photo"]["total"] = round(sum(side["cpu_ms_per_photo"].values()), 2)
    print(f"  {name}: p50 c1 {side['p50_ms_c1']} ms, {side['photos_per_s_c16']} photos/s at c{args.concurrency}, "
          f"p99 {side['p99_ms_c16']} ms, model worker {side['cpu_ms_per_photo'].get('model_worker')} ms CPU/photo",
          flush=True)
    metas = bundle_metas(home, bento_path / "src")
    side["serves_trunk_stages"], side["int8_units"] = serves_trunk_stages(metas), int8_units(metas)
    try:
        side["graphs_cpu_ms_per_photo"] = graphs_cpu_ms(home, bento_path / "src", [p["path"] for p in photos])
    except ValueError as exc:       # bundles this checkout's ReviewerModels cannot open (before the shared trunk)
        side["graphs_cpu_ms_per_photo"] = {"not_measured": str(exc)}
    graphs = side["graphs_cpu_ms_per_photo"]
    for key, base in (("model_worker_cpu_over_graphs_batch1", "serial_batch1"),
                      ("model_worker_cpu_over_graphs_batch1_both_cores", "serial_batch1_both_cores")):
        side[key] = round(side["cpu_ms_per_photo"]["model_worker"] / graphs[base], 3) if base in graphs else None
    print(f"  {name}: graphs in process, CPU ms per photo {graphs}", flush=True)
    side["category_latency_ms"] = prohibited_latency(bento_path / "src" / "params.yaml", side["serves_trunk_stages"],
                                                     args.repeats)
    return side


LINKED = ("data", ".cache", "gallery", "dvc.lock", "gallery.dvc")
OWN = {"models": ("reviewer",), "metrics": ("reviewer.json", "real_photos.json"),   # the scratch's own stage outputs
       "plots": ("real_photos",)}


def _known_keys(theirs: dict, ours: dict) -> dict:
    """``theirs`` without the settings ``ours`` no longer has (recursively, where both hold a mapping): an older
    Bento's params may carry a setting renamed or removed since, which this checkout's params model refuses."""
    return {key: _known_keys(value, ours[key]) if isinstance(value, dict) and isinstance(ours.get(key), dict) else value
            for key, value in theirs.items() if key in ours}


def _with_new_keys(theirs: dict, ours: dict) -> dict:
    """``theirs`` with every key of ``ours`` it lacks (recursively) added."""
    out = dict(theirs)
    for key, value in ours.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_new_keys(out[key], value)
    return out


def build_new(workspace: Path, scratch: Path) -> str:
    """``reviewops reviewer``, ``gate`` and ``build`` with this checkout in ``scratch`` (the workspace's trained
    candidates linked in, the reviewer and real-photo stages' outputs its own, reports and params copied, a model
    store of its own); returns ``HOME:TAG``. The reviewer stage chooses the INT8 graphs the gate then registers;
    the real-photo stage scores the bundles it exported, which the gate holds to ``gate.real_photos``."""
    import shutil
    import subprocess

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for name in LINKED:
        if (workspace / name).exists():
            (scratch / name).symlink_to(workspace / name)
    for name, own in OWN.items():
        (scratch / name).mkdir()
        for entry in (workspace / name).iterdir() if (workspace / name).is_dir() else ():
            if entry.name not in own:
                (scratch / name / entry.name).symlink_to(entry)
    shutil.copytree(workspace / "reports", scratch / "reports")        # the gate writes its reports there
    # the workspace's params, plus the settings this checkout added since (their values from this checkout's file)
    ours = yaml.safe_load(PARAMS.read_text())
    (scratch / "params.yaml").write_text(yaml.safe_dump(_with_new_keys(yaml.safe_load((workspace / "params.yaml")
                                                                                      .read_text()), ours),
                                                        sort_keys=False))
    env = {**os.environ, "BENTOML_HOME": str(scratch / ".bentoml")}
    cli = str(Path(sys.executable).with_name("reviewops"))
    for step in ("reviewer", "real-photos", "gate", "build"):
        print(f"new: reviewops {step} in {scratch}", flush=True)
        subprocess.run([cli, step], cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
    return f"{scratch / '.bentoml'}:reviewops-reviewer:latest"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    sides = ("old", "new")
    colours = {"old": "#999999", "new": "#1f77b4"}
    for ax, key, title in ((axes[0], "p50_ms_c1", "p50 at concurrency 1 (ms)"),
                           (axes[1], "photos_per_s_c16", "photos/s at concurrency 16")):
        ax.bar(sides, [result[s][key] for s in sides], color=[colours[s] for s in sides])
        for i, s in enumerate(sides):
            ax.annotate(f"{result[s][key]:g}", (i, result[s][key]), ha="center", va="bottom")
        ax.set_title(title)
    roles = [r for r in ("model_worker", "http_worker", "router", "bentoml_parent") if r in result["old"]["cpu_ms_per_photo"]]
    width = 0.38
    for j, s in enumerate(sides):
        axes[2].bar(np.arange(len(roles)) + (j - 0.5) * width, [result[s]["cpu_ms_per_photo"][r] for r in roles],
                    width, label=s, color=colours[s])
    axes[2].set_xticks(np.arange(len(roles)), [r.replace("_", " ") for r in roles], fontsize=8)
    axes[2].set_title("CPU ms per photo under load")
    axes[2].legend()
    for s in sides:
        counts = [int(k) for k in result[s]["category_latency_ms"]]
        axes[3].plot(counts, list(result[s]["category_latency_ms"].values()), "o-", label=s, color=colours[s])
    axes[3].set_xlabel("prohibited categories")
    axes[3].set_title("prohibited check, one photo (ms)")
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the project whose test split gives the photos")
    ap.add_argument("--old", required=True, help="BENTOML_HOME:TAG of the old reviewer Bento")
    new = ap.add_mutually_exclusive_group(required=True)
    new.add_argument("--new", help="BENTOML_HOME:TAG of the new reviewer Bento")
    new.add_argument("--build-new", type=Path, help="build the new Bento from --root's candidates with this checkout, "
                                                    "in this scratch directory (replaced)")
    ap.add_argument("--sequential", type=int, default=200, help="requests at concurrency 1")
    ap.add_argument("--concurrent", type=int, default=480, help="requests at concurrency 16")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per in-process category count")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serving_speed.json")
    args = ap.parse_args()
    if args.build_new:
        args.new = build_new(args.root.resolve(), args.build_new.resolve())
    photos = test_photos(args.root.resolve(), 64)
    result: dict = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                "load_average_at_start": os.getloadavg()},
                    "photos": f"{len(photos)} test-split photos of {args.root.name} (JPEG, 256 px), claimed SKU sent, "
                              "POST /review through the front (the router)"}
    with tempfile.TemporaryDirectory(prefix="serving-speed-") as tmp:
        for name in ("old", "new"):
            home, _, tag = getattr(args, name).partition(":")
            result[name] = one_side(name, Path(home).resolve(), tag, photos, args, Path(tmp))
    result["ratio"] = {k: round(result["new"][k] / result["old"][k], 3)
                       for k in ("p50_ms_c1", "p90_ms_c1", "p50_ms_c1_after_burst", "photos_per_s_c16", "p99_ms_c16",
                                 "worker_rss_mb",
                                 "cold_start_s") if result["old"].get(k)}
    result["ratio"]["model_worker_cpu_ms_per_photo"] = round(result["new"]["cpu_ms_per_photo"]["model_worker"]
                                                             / result["old"]["cpu_ms_per_photo"]["model_worker"], 3)
    for side in ("old", "new"):
        lat = result[side]["category_latency_ms"]
        result[side]["category_latency_ratio_to_1"] = {k: round(v / lat["1"], 2) for k, v in lat.items()}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["ratio"]), f"wrote {args.out} and {args.out.with_suffix('.png')}", sep="\n")


if __name__ == "__main__":
    main()
