"""Perceptual hash (DCT pHash, 64 bits) to find near-duplicate photos across splits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def phash_image(gray: np.ndarray) -> int:
    """64-bit pHash of a grayscale image: sign of the low 8x8 DCT block against its median."""
    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def phash_file(path: str | Path) -> int | None:
    """pHash of an image file, or None when it does not decode."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return None if gray is None else phash_image(gray)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two arrays of 64-bit hashes: shape (len(a), len(b))."""
    a = np.asarray(a, dtype=np.uint64)[:, None]
    b = np.asarray(b, dtype=np.uint64)[None, :]
    x = np.bitwise_xor(a, b)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def near_duplicates(left: np.ndarray, right: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair left[i], right[j] within ``max_distance`` bits."""
    if len(left) == 0 or len(right) == 0:
        return []
    out = []
    for start in range(0, len(left), 512):  # bounded memory: 512 x len(right) x 64 bits at a time
        d = hamming(left[start:start + 512], right)
        for i, j in zip(*np.nonzero(d <= max_distance)):
            out.append((start + int(i), int(j), int(d[i, j])))
    return out
