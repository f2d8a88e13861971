"""Backgrounds of real shooting setups: wood tables, cloth, paper sweeps, packaged real photos.

Real photographs come from scikit-image's wheel (textures and photos under ``skimage/data``).
The real photos that ship with ultralytics, scikit-learn and matplotlib are deliberately never
used here: they are the project's real-photo checks (shared/DATA.md).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# textures become table tops (tinted), photos become defocused backdrops and splice sources
SKIMAGE_TEXTURES = ("brick.png", "grass.png", "gravel.png")
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "camera.png", "moon.png", "page.png")
KINDS = ("wood", "cloth", "sweep", "desk", "texture", "photo")
_KIND_P = (0.22, 0.18, 0.2, 0.12, 0.14, 0.14)


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


@lru_cache(maxsize=None)
def real_image(name: str) -> np.ndarray:
    """A packaged real photo as float32 RGB in [0, 1]."""
    img = cv2.imread(str(_skimage_dir() / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"scikit-image sample {name} is missing from {_skimage_dir()}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def random_crop(rng: np.random.Generator, img: np.ndarray, size: int, min_frac: float = 0.35) -> np.ndarray:
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(min_frac, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _wood(rng, size):
    """Planks: low-frequency growth rings warped by noise, fine streaks along the grain, seams."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(-0.2, 0.2) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    warp = _smooth_noise(rng, size, 5) * rng.uniform(10, 30)
    rings = np.sin((v + warp) * rng.uniform(0.05, 0.14)) * 0.5 + 0.5
    streaks = cv2.resize(rng.random((size, 8)).astype(np.float32), (size, size)) if abs(np.cos(angle)) > 0.5 \
        else cv2.resize(rng.random((8, size)).astype(np.float32), (size, size))
    seams = (np.mod(v, rng.uniform(60, 120)) < 1.5).astype(np.float32)
    base = np.array(rng.choice([(0.55, 0.38, 0.22), (0.72, 0.55, 0.36), (0.35, 0.24, 0.15), (0.82, 0.7, 0.55)]),
                    dtype=np.float32)
    tone = 0.78 + 0.2 * rings + 0.08 * streaks - 0.35 * seams
    return np.clip(base * tone[..., None], 0, 1).astype(np.float32)


def _cloth(rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(2.5, 5.0)
    weave = (np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period)) * 0.06
    folds = (_smooth_noise(rng, size, 4) - 0.5) * 0.35
    base = rng.uniform(0.15, 0.85, size=3).astype(np.float32)
    return np.clip(base * (1.0 + weave + folds)[..., None], 0, 1)


def _sweep(rng, size):
    """A paper sweep or light tent: smooth vertical gradient, nearly neutral."""
    top = rng.uniform(0.75, 1.0)
    bottom = top * rng.uniform(0.6, 0.95)
    ramp = np.linspace(top, bottom, size, dtype=np.float32)[:, None, None]
    tint = 1.0 + rng.normal(0, 0.04, size=3).astype(np.float32)
    return np.clip(np.broadcast_to(ramp * tint, (size, size, 3)).copy(), 0, 1)


def _desk(rng, size):
    base = rng.uniform(0.1, 0.9, size=3).astype(np.float32) * rng.uniform(0.4, 1.0)
    mottle = (_smooth_noise(rng, size, 16) - 0.5) * 0.12 + (_smooth_noise(rng, size, 96) - 0.5) * 0.05
    return np.clip(base * (1.0 + mottle)[..., None], 0, 1)


def _texture(rng, size):
    tex = random_crop(rng, real_image(str(rng.choice(SKIMAGE_TEXTURES))), size, 0.25).mean(axis=2)
    tint = rng.uniform(0.4, 1.0, size=3).astype(np.float32)
    return np.clip(tex[..., None] * tint * rng.uniform(0.8, 1.2), 0, 1)


def _photo(rng, size):
    """A real room photo, defocused as a shallow depth of field renders the backdrop."""
    crop = random_crop(rng, real_image(str(rng.choice(SKIMAGE_PHOTOS))), size, 0.3)
    if crop.ndim == 2 or crop.shape[2] == 1:
        crop = np.repeat(crop.reshape(size, size, 1), 3, axis=2)
    return cv2.GaussianBlur(crop, (0, 0), rng.uniform(2.0, 6.0))


_MAKERS = {"wood": _wood, "cloth": _cloth, "sweep": _sweep, "desk": _desk, "texture": _texture, "photo": _photo}


def make_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A float32 RGB background of ``size`` x ``size`` and its kind."""
    kind = str(rng.choice(KINDS, p=_KIND_P))
    return _MAKERS[kind](rng, size).astype(np.float32), kind
