"""Active learning: send the photos a model is least sure of to annotators; their answers come back
as a new data batch.

    reviewops select --family prohibited --category cash --k 500 [--pool DIR]
    reviewops select --family detector --k 500 [--pool DIR]            # the dirt check

The steps, one module each:

- ``pool``: the unlabelled photos (a folder, or the photos the service archived and logged, which the
  app layer reads from the prediction log), minus the versioned ones, capped at
  ``active_learning.pool_size``;
- ``scores``: each photo's probability and uncertainty from the trained models, and its embedding;
- this module: the choice (:func:`pick`) and :func:`select_queue`, which runs the steps;
- ``label_studio``: the queue folder and Label Studio's import files;
- ``answers``: the annotators' answers back as a batch (``reviewops import-labels``).

Selection. Greedy, most uncertain first. A photo is skipped as a near-duplicate of one already
selected when their embeddings lie within ``active_learning.duplicate_distance`` (cosine distance) or
their pHashes within ``validation.phash_max_distance`` bits. Both are needed: byte-identical and resized
copies sit at embedding distance 0 to 0.05, but a JPEG re-save at quality 60 moves the embedding by
up to 0.11 while distinct photos of the tiny batch come as close as 0.04 (256 px), and pHash keeps
the re-save within 12 bits against at least 22 for distinct photos (``pipelines/data/phash.py``). A photo
whose pHash is that close to a frozen test photo is skipped too: validation would refuse its label.
``strategy="random"`` walks the pool in random order instead (the baseline of
``benchmarks/active_learning.py``), with the same duplicate rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipelines.active_learning.label_studio import folder_name, queue_dir, write_queue
from pipelines.active_learning.pool import load_pool
from pipelines.active_learning.scores import embeddings, score
from pipelines.data.dataset import frozen_test_phashes
from pipelines.data.phash import phash_file
from pipelines.params import Params, load_params

TARGETS = ("prohibited", "detector")
STRATEGIES = ("uncertainty", "random")


@dataclass(frozen=True)
class Queue:
    path: Path
    family: str
    category: str | None
    strategy: str
    size: int
    scored: int
    near_duplicates_skipped: int
    test_duplicates_skipped: int
    model_version: str

    def summary(self) -> str:
        what = f"{self.family}:{self.category}" if self.category else "detector:dirt"
        order = "most uncertain first" if self.strategy == "uncertainty" else "in random order"
        return (f"queue {self.path}: {self.size} photos for {what} ({order}) of {self.scored} scored\n"
                f"  skipped {self.near_duplicates_skipped} near-duplicates, {self.test_duplicates_skipped} "
                f"near-copies of test photos; model {self.model_version}\n"
                f"  Label Studio: label_studio.json (tasks + pre-annotations), label_config.xml; "
                f"list: queue.csv; photos: images/")

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def prohibited_categories(root: str | Path) -> list[str]:
    """The prohibited categories of the project's params.yaml (one selection each)."""
    return list(load_params(Path(root) / "params.yaml").prohibited.categories)


def check_target(params: Params, family: str, category: str | None, strategy: str = "uncertainty") -> None:
    """Refuse an unknown family, prohibited category or strategy (a ValueError that says what is known)."""
    if family not in TARGETS:
        raise ValueError(f"unknown family {family!r} for selection: expected one of {', '.join(TARGETS)} "
                         f"(detector selects for the dirt check)")
    if family == "prohibited" and category not in params.prohibited.categories:
        raise ValueError(f"unknown prohibited category {category!r}: params.yaml prohibited.categories is "
                         f"{list(params.prohibited.categories)}")
    if family == "detector" and category is not None:
        raise ValueError("--category applies to the prohibited family only")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


# --- the choice ----------------------------------------------------------------------------------------

def _hash_bytes(hashes: list[str | None]) -> np.ndarray:
    """Hex pHashes as rows of bytes (an undecodable photo's None as all ones: far from every photo)."""
    return np.array([np.frombuffer(bytes.fromhex(h), np.uint8) if h else np.full(32, 255, np.uint8)
                     for h in hashes], dtype=np.uint8).reshape(len(hashes), -1)


def _bit_distance(row: np.ndarray, rows: np.ndarray) -> int:
    """Smallest Hamming distance between one hash and a set of hashes (as bytes)."""
    return int(np.unpackbits(np.bitwise_xor(rows, row), axis=1).sum(1).min())


def pick(order, emb: np.ndarray, k: int, max_distance: float, phash, max_bits: int,
         frozen: list[str]) -> tuple[list[int], int, int]:
    """Walk ``order`` and keep up to ``k`` photos. A photo is a near-duplicate of a kept one when their
    embeddings are within ``max_distance`` (cosine) or their pHashes (``phash(i)``, hex) within ``max_bits``;
    it is refused when its pHash is within ``max_bits`` of a ``frozen`` test photo.
    Returns (kept indices, near-duplicates skipped, near-copies of test photos skipped)."""
    kept: list[int] = []
    kept_emb = np.zeros((max(k, 0), emb.shape[1]), dtype=emb.dtype)
    kept_hash = np.zeros((max(k, 0), 32), dtype=np.uint8)
    frozen_hash = _hash_bytes(list(frozen)) if len(frozen) else None
    duplicates = near_test = 0
    for i in map(int, order):
        n = len(kept)
        if n >= k:
            break
        if n and float((1.0 - kept_emb[:n] @ emb[i]).min()) <= max_distance:
            duplicates += 1
            continue
        h = _hash_bytes([phash(i)])
        if n and _bit_distance(h, kept_hash[:n]) <= max_bits:
            duplicates += 1
        elif frozen_hash is not None and _bit_distance(h, frozen_hash) <= max_bits:
            near_test += 1
        else:
            kept.append(i)
            kept_emb[n], kept_hash[n] = emb[i], h[0]
    return kept, duplicates, near_test


# --- the queue ---------------------------------------------------------------------------------------

def select_queue(root: str | Path, family: str, category: str | None = None, *, pool: str | Path | Sequence[Path],
                 k: int | None = None, stamp: str | None = None, strategy: str = "uncertainty",
                 seed: int | None = None, params: Params | None = None) -> Queue:
    """Score the pool, choose ``k`` photos (most uncertain first, no near-duplicates), write the queue.

    ``pool``: a folder of photos, or photo files in arrival order (the prediction log's, which
    ``pipelines.app.active_learning`` reads); see :func:`pipelines.active_learning.pool.load_pool`.
    """
    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    check_target(params, family, category, strategy)
    stamp = folder_name(stamp) if stamp else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    k = k or params.active_learning.k
    df = load_pool(root, params, pool)
    p, unc, version, boxes = score(root, params, df, family, category)
    order = np.argsort(-unc, kind="stable") if strategy == "uncertainty" else \
        np.random.default_rng(params.seed if seed is None else seed).permutation(len(df))
    paths = list(df["path"])
    kept, duplicates, near_test = pick(order, embeddings(root, params, df), k, params.active_learning.duplicate_distance,
                                       lambda i: phash_file(paths[i]), params.validation.phash_max_distance,
                                       frozen_test_phashes(root))
    picked = df.iloc[kept].assign(score=p[kept], uncertainty=unc[kept], rank=np.arange(1, len(kept) + 1))
    if boxes is not None:   # the annotator's rectangles are pre-filled with the boxes YOLO is fairly sure of
        floor = params.active_learning.box_confidence
        boxes = [[b for b in boxes[i] if b[4] >= floor] for i in kept]
    dest = queue_dir(root, family, category, stamp)
    write_queue(root, dest, picked, family, category, version, boxes)
    return Queue(dest, family, category, strategy, len(kept), len(df), duplicates, near_test, version)
