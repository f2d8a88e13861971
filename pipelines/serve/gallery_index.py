"""The SKU gallery's search: each embedded photo's closest gallery photos, walked into its best SKUs.

A gallery under ``serving.gallery_index.min_mib`` (rows x width x 4 bytes) is searched exactly: one matrix product
and :func:`pipelines.serve.decision.sku_candidates`, as evaluation scores it. From that size up, brute force passes
5 ms a photo on two cores (``benchmarks/gallery_search.py``: 10k SKUs x 3 photos x 1024 floats, 117 MiB, 2.8 ms;
100k x 3 x 256, 293 MiB, 8.3 ms; x 1024, 40 ms), and the gallery is searched through faiss-cpu's inverted-file index
(``IndexIVFFlat``, inner product: the cosine of unit vectors): ``nlist`` k-means lists, of which a photo reads the
``nprobe`` closest. It keeps every vector, so the similarities it returns are exact; what it costs is the gallery
photos in lists it does not read. A genuine claim whose SKU it misses is alarmed (a photo for a person: auto-pass
lost); a wrong claim slips through only if it misses the photo's true SKU yet finds the claimed one. On the
benchmark's vectors (``gallery_search*.json``, ``faiss_ivf``) the top SKU is exact search's for 0.978-0.994 of
photos at 16-32 probes.

The index is built when the service loads the bundle (k-means on at most ``train_rows`` gallery rows; 2.5 s at 100k
SKUs x 256 floats), so a gallery change deploys as before (``reviewops gallery add``: no retraining).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipelines.serve.decision import best_skus, candidate_photos, sku_candidates

MIN_ROWS_PER_LIST = 39          # faiss's k-means wants this many training rows per list (it warns below)


def gallery_mib(vectors: np.ndarray) -> float:
    """The gallery's size as the search reads it: float32 rows x width, in MiB."""
    return vectors.shape[0] * vectors.shape[1] * 4 / 2**20


class GallerySearch:
    """The best ``n`` SKUs of embedded photos over a gallery of unit vectors (``vectors`` [rows, width], ``skus``
    the SKU of each row), exact or through the index (``index``: ``serving.gallery_index``; None: always exact)."""

    def __init__(self, vectors: np.ndarray, skus: Sequence[str], index: Mapping | None = None):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.skus = np.asarray(skus)
        if len(self.skus) != len(self.vectors):
            raise ValueError(f"gallery has {len(self.vectors)} vectors but {len(self.skus)} SKU names")
        self.index = None
        if index is not None and len(self.vectors) and gallery_mib(self.vectors) >= float(index["min_mib"]):
            self.index = build_index(self.vectors, index)

    @property
    def kind(self) -> str:
        """``exact`` or the index's description (benchmarks/gallery_search.py records it)."""
        if self.index is None:
            return "exact"
        return f"faiss IndexIVFFlat nlist {self.index.nlist} nprobe {self.index.nprobe}"

    def candidates(self, embeddings: np.ndarray, n: int) -> list[list[list]]:
        """Per photo (unit rows of ``embeddings``) its ``n`` best SKUs as ``[[sku, similarity], ...]``, best first."""
        if self.index is None:
            return [sku_candidates(row, self.skus, n) for row in embeddings @ self.vectors.T]
        queries = np.ascontiguousarray(embeddings, dtype=np.float32)
        out: list[list[list] | None] = [None] * len(queries)
        todo, k = np.arange(len(queries)), candidate_photos(n)
        while len(todo):
            k = min(k, self.index.ntotal)
            sims, found = self.index.search(queries[todo], k)
            short = []
            for i, s, f in zip(todo, sims, found):
                keep = f >= 0                                   # -1: fewer than k photos in the lists read
                out[i] = best_skus(f[keep], s[keep], self.skus, n)
                if len(out[i]) < n and keep.all() and k < self.index.ntotal:
                    short.append(i)                             # one SKU filled the k photos: read more of them
            todo, k = np.asarray(short, dtype=int), 4 * k
        return out


def index_plan(rows: int, config: Mapping) -> tuple[int, int]:
    """``(nlist, training rows)`` of the index over a gallery of ``rows`` (``config``: ``serving.gallery_index``):
    at most one list per ``MIN_ROWS_PER_LIST`` rows, and at least that many training rows per list."""
    nlist = max(1, min(int(config["nlist"]), rows // MIN_ROWS_PER_LIST))
    return nlist, min(rows, max(nlist * MIN_ROWS_PER_LIST, int(config["train_rows"])))


def build_index(vectors: np.ndarray, config: Mapping):
    """faiss's ``IndexIVFFlat`` over unit ``vectors`` (``config``: ``serving.gallery_index``), reading ``nprobe``
    lists a photo on one thread."""
    try:
        import faiss
    except ImportError as e:                                    # a dependency of the project and of the Bento
        raise RuntimeError(f"a gallery of {gallery_mib(vectors):.0f} MiB (serving.gallery_index.min_mib: "
                           f"{config['min_mib']}) is searched through faiss-cpu, which is not installed") from e
    rows, width = vectors.shape
    nlist, train = index_plan(rows, config)
    quantizer = faiss.IndexFlatIP(width)
    index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors[np.linspace(0, rows - 1, train).astype(int)])   # evenly over the SKUs (rows come by SKU)
    index.add(vectors)
    index.nprobe = min(nlist, int(config["nprobe"]))
    # a photo's search runs on the model worker's thread: faiss's own threads would only contend with ONNX Runtime's
    faiss.omp_set_num_threads(1)
    return index
