"""The SKU gallery's search (pipelines/serve/gallery_index.py): exact below ``serving.gallery_index.min_mib``, faiss's
IVF index from there up, both walked into the same candidates: no servers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.params import load_params
from pipelines.serve.decision import sku_candidates
from pipelines.serve.gallery_index import GallerySearch, gallery_mib

N = 5


def _gallery(skus: int, photos: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors in families of SKUs (as colour and layout twins sit together), and query photos near a
    random gallery photo."""
    rng = np.random.default_rng(seed)
    families = rng.standard_normal((max(1, skus // 8), width))
    centres = families[rng.integers(0, len(families), skus)] + 0.7 * rng.standard_normal((skus, width))
    vectors = np.repeat(centres, photos, axis=0) + 0.5 * rng.standard_normal((skus * photos, width))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    names = np.array([f"sku-{i:05d}" for i in range(skus)]).repeat(photos)
    # a photo at cosine ~0.85 to the gallery photo it was drawn near (a genuine photo's similarity in the demo)
    queries = vectors[rng.integers(0, len(vectors), 200)] + 0.6 * rng.standard_normal((200, width)) / np.sqrt(width)
    return vectors, names, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def _config(**kw) -> dict:
    return {"min_mib": 0.0, "nlist": 64, "nprobe": 8, "train_rows": 50_000} | kw


def test_a_gallery_under_the_size_is_searched_exactly_as_evaluation_scores_it():
    vectors, names, queries = _gallery(300, 3, 32, 0)
    params = load_params()
    search = GallerySearch(vectors, names, params.serving.gallery_index.model_dump())
    assert gallery_mib(vectors) < params.serving.gallery_index.min_mib and search.kind == "exact"
    assert search.candidates(queries, N) == [sku_candidates(row, names, N) for row in queries @ vectors.T]


def test_the_index_reading_every_list_finds_what_exact_search_finds():
    vectors, names, queries = _gallery(2000, 3, 48, 1)
    exact = GallerySearch(vectors, names).candidates(queries, N)
    search = GallerySearch(vectors, names, _config(nprobe=10_000))          # nprobe capped at nlist: every list
    assert search.kind == "faiss IndexIVFFlat nlist 64 nprobe 64"
    found = search.candidates(queries, N)
    assert [[s for s, _ in c] for c in found] == [[s for s, _ in c] for c in exact]
    assert np.allclose([[v for _, v in c] for c in found], [[v for _, v in c] for c in exact], atol=1e-5)


def test_the_index_reading_a_few_lists_keeps_the_top_sku_and_exact_similarities():
    vectors, names, queries = _gallery(4000, 3, 64, 2)
    exact = GallerySearch(vectors, names).candidates(queries, N)
    found = GallerySearch(vectors, names, _config(nlist=128, nprobe=16)).candidates(queries, N)
    agree = np.mean([f[0][0] == e[0][0] for f, e in zip(found, exact)])
    assert agree >= 0.95, agree
    sims = queries @ vectors.T
    for q, cands in enumerate(found):
        assert len({s for s, _ in cands}) == len(cands) == N
        values = [v for _, v in cands]
        assert values == sorted(values, reverse=True)
        for sku, v in cands:                    # a photo it found, at its exact cosine: at most the SKU's best
            best = sims[q, names == sku]
            assert v <= best.max() + 1e-5 and np.isclose(best, v, atol=1e-5).any()


def test_a_sku_filling_the_first_photos_read_sends_the_search_further():
    vectors, names, queries = _gallery(300, 3, 32, 3)
    crowd = np.repeat(queries[:1], 200, axis=0) + 1e-3 * np.random.default_rng(4).standard_normal((200, 32))
    crowd = (crowd / np.linalg.norm(crowd, axis=1, keepdims=True)).astype(np.float32)
    vectors = np.concatenate([vectors, crowd])              # one SKU with 200 photos next to the first query
    names = np.concatenate([names, ["crowded"] * 200])
    exact = GallerySearch(vectors, names).candidates(queries[:1], N)
    found = GallerySearch(vectors, names, _config(nlist=16, nprobe=16)).candidates(queries[:1], N)
    assert exact[0][0][0] == "crowded" and len(found[0]) == N
    assert [s for s, _ in found[0]] == [s for s, _ in exact[0]]


def test_a_gallery_and_its_names_must_match():
    with pytest.raises(ValueError, match="3 vectors but 2 SKU names"):
        GallerySearch(np.eye(3, dtype=np.float32), ["a", "b"])
