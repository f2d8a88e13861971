"""Photos as model input: one decode and resize used by training, evaluation and serving alike (numpy, OpenCV)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def crop_square(box, pad: float) -> tuple[float, float, float, float] | None:
    """The square around a normalised box (x0, y0, x1, y1, ...), ``pad`` times its longer side and moved inside the
    photo, as normalised (x0, y0, x1, y1); None (the whole photo) for no box or when the square would not fit."""
    if box is None or len(box) < 4:
        return None
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = pad * max(x1 - x0, y1 - y0)
    if not 0.0 < side < 1.0:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), 1.0 - side)
    top = min(max(cy - side / 2, 0.0), 1.0 - side)
    return left, top, left + side, top + side


def product_crop(rgb: np.ndarray, box, pad: float, size: int) -> np.ndarray:
    """The photo's square around its product ``box`` (:func:`crop_square`) resized to ``size``: what the SKU check
    reads in training (the labelled box), evaluation and serving (the detector's). No box: the whole photo."""
    square = crop_square(box, pad)
    if square is not None:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = (round(square[0] * w), round(square[1] * h), round(square[2] * w), round(square[3] * h))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            rgb = rgb[y0:y1, x0:x1]
    return resize(rgb, size)


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


def _read(path: str | Path, prepare: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    return read_rgb(path) if prepare is None else prepare(read_rgb(path))


def load_resized(paths: Sequence[str | Path], size: int, threads: int = 4,
                 prepare: Sequence[Callable[[np.ndarray], np.ndarray] | None] | None = None) -> np.ndarray:
    """All photos decoded and resized to ``size`` x ``size``: uint8 [N, size, size, 3]. ``prepare``: one function
    per photo applied to it as decoded, before the resize (training's camera views, :mod:`pipelines.train.camera`)."""
    prepare = [None] * len(paths) if prepare is None else prepare
    if len(prepare) != len(paths):
        raise ValueError("paths and prepare differ in length")
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(lambda pp: resize(_read(*pp), size), zip(paths, prepare)))) if len(paths) else \
            np.zeros((0, size, size, 3), np.uint8)


def load_cropped(paths: Sequence[str | Path], boxes: Sequence, pad: float, size: int, threads: int = 4,
                 prepare: Sequence[Callable[[np.ndarray], np.ndarray] | None] | None = None) -> np.ndarray:
    """:func:`load_resized` of each photo's :func:`product_crop` around its box (None: the whole photo); ``prepare``
    as there, before the crop."""
    if len(paths) != len(boxes):
        raise ValueError("paths and boxes differ in length")
    prepare = [None] * len(paths) if prepare is None else prepare
    if len(prepare) != len(paths):
        raise ValueError("paths and prepare differ in length")
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(lambda pbp: product_crop(_read(pbp[0], pbp[2]), pbp[1], pad, size),
                                      zip(paths, boxes, prepare)))) \
            if len(paths) else np.zeros((0, size, size, 3), np.uint8)


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
