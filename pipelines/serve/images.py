"""Photos as model input: one decode and resize used by training, evaluation and serving alike (numpy, OpenCV)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: str | Path) -> np.ndarray:
    """The photo as an RGB uint8 array; a file OpenCV cannot decode is an error naming it."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    interp = cv2.INTER_AREA if max(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def to_array(rgbs: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """A float32 batch [N, 3, size, size] scaled to [-1, 1] (the EfficientNet-Lite normalisation)."""
    if isinstance(rgbs, np.ndarray) and rgbs.ndim == 3:      # one photo
        arr = resize(rgbs, size)[None]
    elif isinstance(rgbs, np.ndarray) and rgbs.ndim == 4 and rgbs.shape[1] == size and rgbs.shape[2] == size:
        arr = rgbs                                           # a batch at the size already (load_resized)
    else:                                                    # a sequence of photos of any size
        arr = np.stack([resize(x, size) for x in rgbs])
    out = np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)
    out /= 127.5
    out -= 1.0
    return out


def load_resized(paths: Sequence[str | Path], size: int, threads: int = 4) -> np.ndarray:
    """All photos decoded and resized to ``size`` x ``size``: uint8 [N, size, size, 3]."""
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(lambda p: resize(read_rgb(p), size), paths))) if len(paths) else \
            np.zeros((0, size, size, 3), np.uint8)


def thumbnail(path, px: int) -> str | None:
    """A JPEG data URI of the photo at ``path``, longest side ``px`` (None when it is not on disk or does not
    decode): the thumbnails of the HTML reports (false positives, operating points)."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((px, px))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85)
    except (OSError, UnidentifiedImageError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
