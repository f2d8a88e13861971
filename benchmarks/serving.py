"""Serving benchmark of the deployed reviewer (issue 4): real HTTP on loopback, then each model in-process.

    # on a project with trained demo models: promote, build and deploy them, then measure
    reviewops gate && reviewops build && reviewops deploy
    python benchmarks/serving.py --out benchmarks/results/serving.json

Parts (each can be skipped):
- ``http``: POST /review with test-split photos (multipart, claimed SKU): latency p50/p99 at concurrency 1;
  throughput, p50/p99 and errors at concurrency 16 (BentoML's adaptive batching groups the photos).
- ``models``: each check's model alone on one photo (and on 16): ONNX Runtime as served against eager torch.
- ``prohibited``: the combined prohibited model for 1, 5, 10 and 20 categories (20 = the 10 trained
  classifiers and a copy of each: the same graph shape as 20 trained ones), ONNX Runtime and torch, batch 1.

Every figure is measured here on this machine; the JSON keeps the command, the machine and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train.families import common  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from pipelines.data.dataset import split_frame  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 1), "p90_ms": round(pct(ms, 90), 1),
            "p99_ms": round(pct(ms, 99), 1), "mean_ms": round(statistics.fmean(ms), 1) if ms else None}


def test_photos(root: Path, n: int) -> list[dict]:
    df = split_frame(common.load_frame(root), "test").sort_values("listing_id").head(n)
    return [{"data": Path(r["path"]).read_bytes(), "name": Path(r["path"]).name,
             "sku_id": r["claimed_sku"] if isinstance(r["claimed_sku"], str) and r["claimed_sku"] else None,
             "listing_id": f"bench-{r['listing_id']}"} for _, r in df.iterrows()]


def post(client: httpx.Client, photo: dict) -> tuple[float, int]:
    fields = {k: photo[k] for k in ("sku_id", "listing_id") if photo[k]}
    started = time.perf_counter()
    r = client.post("/review", files={"photo": (photo["name"], photo["data"], "image/jpeg")}, data=fields)
    elapsed = time.perf_counter() - started
    if r.status_code == 200 and "decision" not in r.json():
        return elapsed, -1
    return elapsed, r.status_code


def http_benchmark(url: str, photos: list[dict], sequential: int, concurrent: int, concurrency: int) -> dict:
    with httpx.Client(base_url=url, timeout=120) as client:
        ready = client.get("/readyz")
        if ready.status_code != 200:
            raise SystemExit(f"{url}/readyz answers {ready.status_code}: deploy the reviewer first (reviewops deploy)")
        served = client.get("/models").json()
        for photo in photos[:5]:                          # warm-up: first requests pay lazy initialisation
            post(client, photo)
        times, codes = [], []
        for i in range(sequential):
            t, code = post(client, photos[i % len(photos)])
            times.append(t)
            codes.append(code)
            if (i + 1) % 50 == 0:
                print(f"  c=1: {i + 1}/{sequential}", flush=True)
    one = {"concurrency": 1, **summary_ms(times), "errors": sum(c != 200 for c in codes)}

    lock, done, results = threading.Lock(), [0], []
    local = threading.local()

    def worker(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        out = post(local.client, photos[i % len(photos)])
        with lock:
            done[0] += 1
            if done[0] % 100 == 0:
                print(f"  c={concurrency}: {done[0]}/{concurrent}", flush=True)
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrent)))
    wall = time.perf_counter() - started
    many = {"concurrency": concurrency, **summary_ms([t for t, _ in results]),
            "errors": sum(c != 200 for _, c in results), "wall_s": round(wall, 2),
            "throughput_photos_per_s": round(len(results) / wall, 2)}
    return {"url": url, "bento": served.get("bento"), "models": {f: m["tag"] for f, m in served["models"].items()},
            "single": one, "concurrent": many}


def time_call(fn, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return summary_ms(times)


def model_benchmark(root: Path, bundles: dict[str, Path], photos: np.ndarray, threads: int, repeats: int) -> dict:
    """Each graph of each family alone, batch 1 and 16: ONNX Runtime (served) and eager torch (the same weights)."""
    import torch

    from pipelines.train import families
    from pipelines.train.trunk import to_input
    from pipelines.serve.models import ReviewerModels, prepare

    torch.set_num_threads(threads)
    params = load_params(root / "params.yaml")
    models = ReviewerModels(bundles, threads=threads)
    batch1, batch16 = photos[:1], photos[:16]
    out: dict[str, dict] = {}
    for family in bundles:
        for graph in families.get(family).bundle(root, params).graphs:
            name = graph.name
            session, size = models.graphs[name][0], graph.size
            x1, x16 = (to_input(list(b), size).numpy() for b in (batch1, batch16))
            feed = session.get_inputs()[0].name
            module = graph.module.eval()
            with torch.inference_mode():
                row = {"family": family, "input_px": size,
                       "onnx_b1": time_call(lambda: session.run(None, {feed: x1}), repeats),
                       "torch_b1": time_call(lambda: module(torch.from_numpy(x1)), repeats),
                       "onnx_b16": time_call(lambda: session.run(None, {feed: x16}), max(3, repeats // 8)),
                       "torch_b16": time_call(lambda: module(torch.from_numpy(x16)), max(3, repeats // 8))}
            row["onnx_speedup_b1"] = round(row["torch_b1"]["p50_ms"] / row["onnx_b1"]["p50_ms"], 2)
            out[name] = row
            print(f"  {name}: onnx {row['onnx_b1']['p50_ms']} ms, torch {row['torch_b1']['p50_ms']} ms (batch 1)",
                  flush=True)
    if models.yolo:
        from pipelines.train.families import detector
        from ultralytics import YOLO

        meta = models.metas["detector"]["yolo"]
        bgr = [np.ascontiguousarray(batch1[0][..., ::-1])]
        pt = YOLO(str(detector.model_path(root)))
        kw = {"imgsz": meta["imgsz"], "conf": meta["conf"], "device": "cpu", "verbose": False}
        yolo = models.yolo["boxes"][0]
        row = {"family": "detector", "input_px": meta["imgsz"],
               "onnx_b1": time_call(lambda: yolo.detect(batch1), repeats),
               "torch_b1": time_call(lambda: pt.predict(bgr, **kw), repeats)}
        row["onnx_speedup_b1"] = round(row["torch_b1"]["p50_ms"] / row["onnx_b1"]["p50_ms"], 2)
        out["yolo"] = row
        print(f"  yolo: onnx {row['onnx_b1']['p50_ms']} ms, torch {row['torch_b1']['p50_ms']} ms", flush=True)
    whole = {"decode_resize_b1": time_call(lambda: prepare(photos[0], params.data.image_size), repeats),
             "all_checks_b1": time_call(lambda: models.infer(batch1), repeats),
             "all_checks_b16": time_call(lambda: models.infer(batch16), max(3, repeats // 8))}
    whole["all_checks_b16_per_photo_ms"] = round(whole["all_checks_b16"]["p50_ms"] / 16, 1)
    return {"graphs": out, "engine": whole}


def prohibited_curve(root: Path, photos: np.ndarray, threads: int, repeats: int, counts=(1, 5, 10, 20)) -> dict:
    """The combined prohibited module with 1..20 categories: ONNX Runtime and eager torch, batch 1."""
    import copy

    import onnxruntime as ort
    import torch

    from pipelines.release.export import _export_graph
    from pipelines.train.graphs import Graph
    from pipelines.train.families import prohibited
    from pipelines.train.trunk import to_input

    torch.set_num_threads(threads)
    params = load_params(root / "params.yaml")
    full = prohibited.load_combined(root, params)
    trained = list(full.categories)
    size = params.train.input_size("prohibited")
    x = to_input(list(photos[:1]), size).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            classifiers = {}
            for i in range(k):
                source = trained[i % len(trained)]
                name = source if i < len(trained) else f"{source}-copy{i // len(trained)}"
                classifiers[name] = copy.deepcopy(full.classifiers[source]) if i >= len(trained) \
                    else full.classifiers[source]
            module = prohibited.CombinedProhibited(full.trunk, classifiers).eval()
            path = Path(tmp) / f"prohibited{k}.onnx"
            _export_graph(Graph("prohibited", module, size, "scores", labels=list(module.categories)), path)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = session.get_inputs()[0].name
            with torch.inference_mode():
                row = {"categories": k, "copies": max(0, k - len(trained)),
                       "onnx_b1": time_call(lambda: session.run(None, {feed: x}), repeats),
                       "torch_b1": time_call(lambda: module(torch.from_numpy(x)), repeats)}
            rows.append(row)
            print(f"  prohibited x{k}: onnx {row['onnx_b1']['p50_ms']} ms, torch {row['torch_b1']['p50_ms']} ms",
                  flush=True)
    onnx = [r["onnx_b1"]["p50_ms"] for r in rows]
    slope = np.polyfit(list(counts), onnx, 1)
    fit = np.polyval(slope, list(counts))
    r2 = 1 - float(np.sum((np.array(onnx) - fit) ** 2) / np.sum((np.array(onnx) - np.mean(onnx)) ** 2))
    return {"input_px": size, "trunk_split": params.train.prohibited.trunk_split, "rows": rows,
            "onnx_linear_fit": {"ms_per_category": round(float(slope[0]), 2), "intercept_ms": round(float(slope[1]), 1),
                                "r2": round(r2, 4)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="the project (demo data and models)")
    ap.add_argument("--url", default=None, help="the deployed reviewer (default: loopback, serving.port)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/serving.json"))
    ap.add_argument("--sequential", type=int, default=300, help="requests at concurrency 1")
    ap.add_argument("--concurrent", type=int, default=800, help="requests at concurrency 16")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=40, help="timed calls per in-process model measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["http", "models", "prohibited"])
    args = ap.parse_args()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    url = args.url or f"http://127.0.0.1:{params.serving.port}"
    photos = test_photos(root, 64)
    result: dict = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                "python": platform.python_version(), "load_average_at_start": os.getloadavg()},
                    "photos": f"{len(photos)} test-split photos of {root.name} (JPEG, 256 px), claimed SKU sent"}
    if "http" not in args.skip:
        print(f"HTTP {url}: {args.sequential} requests at concurrency 1, {args.concurrent} at {args.concurrency}")
        result["http"] = http_benchmark(url, photos, args.sequential, args.concurrent, args.concurrency)
        print(json.dumps(result["http"]["single"]), json.dumps(result["http"]["concurrent"]), sep="\n")
    if "models" in args.skip and "prohibited" in args.skip:
        pass
    else:
        from pipelines.serve.photo_input import decode_photo, photo_limits
        from pipelines.release.registry import production_bundles, use_store
        from pipelines.serve.models import prepare

        use_store(root)
        limits = photo_limits(params)
        rgb = np.stack([prepare(decode_photo(p["data"], **limits)) for p in photos[:16]])
        if "models" not in args.skip:
            print("each model in-process (ONNX Runtime as served, eager torch)")
            result["models"] = model_benchmark(root, production_bundles(), rgb, args.threads, args.repeats)
        if "prohibited" not in args.skip:
            print("combined prohibited model, 1/5/10/20 categories")
            result["prohibited_categories"] = prohibited_curve(root, rgb, args.threads, args.repeats)
    result["machine"]["load_average_at_end"] = os.getloadavg()   # other work on the 2 cores skews every figure
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
