"""``top_k`` (argpartition) returns exactly ``rank(s)[:, :k]``, ties and NaNs included: no servers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.serve.decision import rank, top_k


def _with_ties(rng: np.random.Generator, shape: tuple[int, ...], levels: int) -> np.ndarray:
    """Scores drawn from few distinct values, so ties straddle the k-th place often."""
    return (rng.integers(0, levels, size=shape) / levels).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 5, 17])
@pytest.mark.parametrize("levels", [2, 5, 50, 10_000])
def test_equals_rank_with_ties(k: int, levels: int) -> None:
    rng = np.random.default_rng(levels * 100 + k)
    for n in (k, k + 1, 40, 1000):
        s = _with_ties(rng, (32, n), levels)
        assert np.array_equal(top_k(s, k), rank(s)[:, :k])


def test_equals_rank_on_continuous_scores_and_duplicated_gallery_rows() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((3000, 64)).astype(np.float32)
    g[1500:] = g[:1500]                                     # every photo twice: exact ties at every place
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[rng.integers(0, 3000, 32)] + 0.3 * rng.standard_normal((32, 64)).astype(np.float32)
    s = q @ g.T
    for k in (1, 5, 6):
        assert np.array_equal(top_k(s, k), rank(s)[:, :k])


def test_shapes_and_edges() -> None:
    rng = np.random.default_rng(1)
    s = _with_ties(rng, (7, 30), 4)
    assert np.array_equal(top_k(s[0], 5), rank(s[0])[:5])            # one row
    assert np.array_equal(top_k(s.reshape(7, 3, 10), 4), rank(s.reshape(7, 3, 10))[..., :4])
    assert top_k(s, 0).shape == (7, 0)
    assert np.array_equal(top_k(s, 30), rank(s)) and np.array_equal(top_k(s, 99), rank(s))
    assert np.array_equal(top_k(np.zeros((2, 9)), 3), [[0, 1, 2]] * 2)
    assert np.array_equal(top_k(s.astype(np.float64), 5), rank(s)[:, :5])
    signed = np.array([[0.0, -0.0, 0.0, -0.0, 1.0]])                  # -0.0 == 0.0: gallery order
    assert np.array_equal(top_k(signed, 3), rank(signed)[:, :3])


def test_nan_rows_like_rank() -> None:
    rng = np.random.default_rng(2)
    s = _with_ties(rng, (16, 50), 6).astype(np.float64)
    s[0, :48] = np.nan                                     # fewer finite scores than k
    s[1, ::3] = np.nan
    s[2] = np.nan
    for k in (1, 3, 5):
        assert np.array_equal(top_k(s, k), rank(s)[:, :k])
