"""SKU gallery search as the gallery grows: 1k, 10k and 100k SKUs x 3 photos (256-d, float32, L2-normalised).

    python benchmarks/gallery_search.py            # the three sizes, faiss where needed; ~3 min on 2 cores
    python benchmarks/gallery_search.py --quick    # 1k and 10k only, a few seconds; prints, writes nothing

Data (fixed seed): per SKU a random unit centre; each of its 3 gallery photos is ``centre + 0.6 * u`` (``u`` a
random unit vector), normalised; each query "photo" is a random gallery photo ``+ 0.5 * u``, normalised, so it
has a true neighbour (cosine ~0.89) and two sibling photos of the same SKU (~0.66).

Variants, all on query batches of 1 and 32 photos (serving's batches are 1..32):
- ``matmul_only``: ``emb @ vectors.T`` alone, the floor of any brute force;
- ``argsort_full``: the matmul, then ``decision.rank`` (the full stable argsort the SKU ranking walked before
  ``top_k``);
- ``argpartition_topk``: the matmul, then ``decision.top_k(sims, 5)`` (argpartition, then a sort of those 5).

Latency per photo = batch time / batch size; median and p95 over repetitions bounded in number and time.
Timings are only as quiet as the machine: the JSON keeps the load average at start and end.
Memory: the gallery matrix's bytes; per variant the peak of numpy's allocations in one call (tracemalloc: the
working memory; faiss's own C++ buffers are not seen) and the peak RSS growth over the cell, warm-up included
(VmHWM reset through /proc/self/clear_refs; memory glibc kept from earlier cells is reused, so it can read low).
Accuracy of faiss against exact search: recall@5 and @3 (shared gallery photos), top-1 photo and top-1 SKU
agreement (the SKU serving predicts) and agreement of the summed-similarity top-5 vote.
If a brute-force variant is over 5 ms per photo at 100k x 3, the served faiss-cpu index
(``gallery_index.build_index``: IndexIVFFlat, inner product, ``serving.gallery_index``'s nlist and training rows, one
thread) is measured at several ``nprobe`` (build time, latency, memory, recall@5 against exact brute force).
``served``, at every size: the search as the service runs it (``GallerySearch`` with ``serving.gallery_index``:
exact under ``min_mib``, the index from there up), the photo's 5 best SKUs walked from the photos found, and how
often its top SKU and its 5 SKUs are exact search's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.params import load_params  # noqa: E402
from pipelines.serve.decision import rank, top_k  # noqa: E402
from pipelines.serve.gallery_index import GallerySearch, build_index, index_plan  # noqa: E402

DIM, PHOTOS_PER_SKU, K, SEED = 256, 3, 5, 20240
N_QUERIES = 1024
LIMIT_MS = 5.0                                        # per photo: beyond it, a real vector index
NPROBE = [8, 16, 32, 64]                              # the index's lists read per photo (serving: params.yaml)


# --- measuring -----------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_peak() -> int:
    """Reset the peak RSS (VmHWM) to the current RSS where Linux allows it; the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kb("VmRSS") * 1024


def peak_growth(start: int) -> int:
    return _status_kb("VmHWM") * 1024 - start


def unit(a: np.ndarray) -> np.ndarray:
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return a


def make_data(skus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery (skus*3 x 256), its SKU index per row, and N_QUERIES queries; float32, built in chunks."""
    rng = np.random.default_rng([SEED, skus])
    centres = unit(rng.standard_normal((skus, DIM), dtype=np.float32))
    gallery = np.empty((skus * PHOTOS_PER_SKU, DIM), dtype=np.float32)
    step = 30_000
    for i in range(0, len(gallery), step):
        rows = slice(i, min(i + step, len(gallery)))
        noise = unit(rng.standard_normal((rows.stop - rows.start, DIM), dtype=np.float32))
        gallery[rows] = unit(centres[np.arange(rows.start, rows.stop) // PHOTOS_PER_SKU] + 0.6 * noise)
    del centres
    sku_of = np.arange(len(gallery)) // PHOTOS_PER_SKU
    source = rng.integers(0, len(gallery), N_QUERIES)
    queries = unit(gallery[source] + 0.5 * unit(rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)))
    return gallery, sku_of, queries


def timed(fn, queries: np.ndarray, batch: int, budget_s: float, max_reps: int, min_reps: int) -> dict:
    """Run ``fn`` on successive query batches until max_reps, or budget_s once min_reps are done."""
    start = reset_peak()
    tracemalloc.start()                                                   # numpy reports its buffers to it
    fn(queries[:batch])                                                   # warm-up, and the working memory
    alloc = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    per_photo, t_end, i = [], time.perf_counter() + budget_s, 0
    while len(per_photo) < max_reps and (len(per_photo) < min_reps or time.perf_counter() < t_end):
        q = queries[(i * batch) % (len(queries) - batch + 1):][:batch]
        t = time.perf_counter()
        fn(q)
        per_photo.append((time.perf_counter() - t) / batch * 1000)
        i += 1
    ms = np.asarray(per_photo)
    return {"ms_per_photo_median": round(float(np.median(ms)), 4),
            "ms_per_photo_p95": round(float(np.percentile(ms, 95)), 4), "reps": len(ms),
            "peak_alloc_bytes": alloc, "peak_rss_growth_bytes": peak_growth(start)}


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact)]))


def vote(sims_rows: np.ndarray, idx: np.ndarray, sku_of: np.ndarray) -> np.ndarray:
    """The kNN vote's SKU per query (summed similarity of the top k; as decision.knn_vote)."""
    out = []
    for s, order in zip(sims_rows, idx):
        votes: dict[int, float] = {}
        for j, v in zip(order, s):
            if j >= 0:
                votes[int(sku_of[j])] = votes.get(int(sku_of[j]), 0.0) + float(v)
        out.append(max(votes, key=votes.get))
    return np.asarray(out)


def exact_topk(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by brute force (top_k == rank[:, :k]) and their similarities."""
    idx, sims = [], []
    for i in range(0, len(queries), 128):
        s = queries[i:i + 128] @ gallery.T
        idx.append(top_k(s, K))
        sims.append(np.take_along_axis(s, idx[-1], axis=1))
    return np.concatenate(idx), np.concatenate(sims)


# --- the benchmark --------------------------------------------------------------------------------

def brute_force(gallery: np.ndarray, queries: np.ndarray, quick: bool) -> dict:
    variants = {"matmul_only": lambda q: q @ gallery.T,
                "argsort_full": lambda q: rank(q @ gallery.T),
                "argpartition_topk": lambda q: top_k(q @ gallery.T, K)}
    out: dict = {}
    for name, fn in variants.items():
        for batch in (1, 32):
            out.setdefault(name, {})[f"batch_{batch}"] = timed(
                fn, queries, batch, budget_s=1.0 if quick else 6.0,
                max_reps=(100 if quick else 300) if batch == 1 else (20 if quick else 30), min_reps=5 if quick else 10)
    sims = queries[:256] @ gallery.T
    out["topk_equals_rank"] = bool(np.array_equal(top_k(sims, K), rank(sims)[:, :K]))
    return out


def ivf(gallery: np.ndarray, sku_of: np.ndarray, queries: np.ndarray, config: dict) -> dict:
    """The served index (:func:`gallery_index.build_index`, ``serving.gallery_index``) at several ``nprobe``."""
    import faiss

    exact, exact_sims = exact_topk(gallery, queries)
    exact_sku = vote(exact_sims, exact, sku_of)
    start = reset_peak()
    t = time.perf_counter()
    index = build_index(gallery, config)
    build_s = time.perf_counter() - t
    out = {"faiss_version": faiss.__version__,
           "index": f"IndexIVFFlat(IndexFlatIP({DIM}), {DIM}, nlist, METRIC_INNER_PRODUCT)",
           "params": {"nlist": index.nlist, "train_rows": index_plan(len(gallery), config)[1], "k": K,
                      "omp_threads": faiss.omp_get_max_threads()},
           "build_s": round(build_s, 2),
           "index_bytes": index.ntotal * (DIM * 4 + 8) + index.nlist * DIM * 4,   # vectors + ids + centroids
           "build_peak_rss_growth_bytes": peak_growth(start), "by_nprobe": {}}
    for nprobe in NPROBE:
        index.nprobe = nprobe
        sims, found = index.search(queries, K)
        row = {f"batch_{b}": timed(lambda q: index.search(q, K), queries, b, 4.0, 300 if b == 1 else 30, 10)
               for b in (1, 32)}
        row |= {"recall_at_5": round(recall(found, exact, 5), 4), "recall_at_3": round(recall(found, exact, 3), 4),
                "top1_agreement": round(float(np.mean(found[:, 0] == exact[:, 0])), 4),
                "top1_sku_agreement": round(float(np.mean(sku_of[found[:, 0]] == sku_of[exact[:, 0]])), 4),
                "knn_vote_sku_agreement": round(float(np.mean(vote(sims, found, sku_of) == exact_sku)), 4)}
        out["by_nprobe"][str(nprobe)] = row
    return out


def served(gallery: np.ndarray, sku_of: np.ndarray, queries: np.ndarray, config: dict) -> dict:
    """The search as the service runs it (:class:`GallerySearch` with ``serving.gallery_index``): exact below
    ``min_mib``, the index from there up; the photo's 5 best SKUs walked from the photos found."""
    names = sku_of.astype(str)
    search = GallerySearch(gallery, names, config)
    exact = GallerySearch(gallery, names).candidates(queries, K)
    found = search.candidates(queries, K)
    top1 = np.mean([f[0][0] == e[0][0] for f, e in zip(found, exact)])
    top5 = np.mean([[s for s, _ in f] == [s for s, _ in e] for f, e in zip(found, exact)])
    out = {"search": search.kind, "top1_sku_agreement_with_exact": round(float(top1), 4),
           "top5_skus_agreement_with_exact": round(float(top5), 4)}
    for batch in (1, 32):
        out[f"batch_{batch}"] = timed(lambda q: search.candidates(q, K), queries, batch, 4.0,
                                      300 if batch == 1 else 30, 10)
    return out


def set_dim(dim: int) -> None:
    """The vectors' width for this run (every function reads the module's DIM)."""
    global DIM
    if dim <= 0:
        raise SystemExit(f"--dim must be positive, got {dim}")
    DIM = dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k SKUs only; print, write nothing unless --out")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/gallery_search.json (full run)")
    ap.add_argument("--dim", type=int, default=DIM, help="vector width (256: the embedding; 1024: with "
                                                         "train.sku.parts: 3)")
    args = ap.parse_args()
    set_dim(args.dim)
    out_path = args.out or (None if args.quick else Path(__file__).parent / "results" / "gallery_search.json")
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    result: dict = {
        "command": "python benchmarks/gallery_search.py" + (" --quick" if args.quick else "")
                   + (f" --dim {DIM}" if DIM != 256 else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "cores": len(re.findall(r"^processor\s*:", Path("/proc/cpuinfo").read_text(), re.M)),
        "numpy": np.__version__, "python": platform.python_version(),
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "setup": {"dim": DIM, "photos_per_sku": PHOTOS_PER_SKU, "k": K, "seed": SEED, "queries": N_QUERIES,
                  "dtype": "float32", "limit_ms_per_photo": LIMIT_MS,
                  "latency": "batch time / batch size; median and p95 over reps (bounded in count and time)"},
        "sizes": {}}
    config = load_params().serving.gallery_index.model_dump()
    result["setup"]["gallery_index"] = config
    t0 = time.perf_counter()
    for skus in sizes:
        start = reset_peak()
        gallery, sku_of, queries = make_data(skus)
        gc.collect()
        entry = {"gallery_rows": len(gallery), "gallery_bytes": int(gallery.nbytes),
                 "rss_growth_after_build_bytes": _status_kb("VmRSS") * 1024 - start,
                 "brute_force": brute_force(gallery, queries, args.quick)}
        bf = {f"{v}/batch_{b}": entry["brute_force"][v][f"batch_{b}"]["ms_per_photo_median"]
              for v in ("argsort_full", "argpartition_topk") for b in (1, 32)}
        if skus == 100_000:
            over = {name: ms for name, ms in bf.items() if ms > LIMIT_MS}
            result["faiss_needed"] = bool(over)
            result["over_limit_at_100k"] = over
            if over:
                entry["faiss_ivf"] = ivf(gallery, sku_of, queries, config)
        entry["served"] = served(gallery, sku_of, queries, config)
        result["sizes"][f"{skus // 1000}k_skus"] = entry
        print(f"{skus:>7} SKUs ({len(gallery)} rows, {gallery.nbytes / 2**20:.0f} MiB): "
              + ", ".join(f"{k} {v:.3f} ms" for k, v in bf.items()), file=sys.stderr, flush=True)
        del gallery, sku_of, queries
        gc.collect()
    if "faiss_needed" not in result:
        result["faiss_needed"] = "not decided: --quick leaves out 100k SKUs"
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text + "\n")
        print(f"wrote {out_path} in {result['elapsed_s']} s")
    else:
        print(text)


if __name__ == "__main__":
    main()
