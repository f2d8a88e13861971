"""Training views of a photo as real cameras and uploads make them: exposure, white balance, a smaller upload,
sensor noise and one more JPEG.

The generator renders every photo through one camera model (``pipelines.data.synth.camera``: its lighting,
noise and JPEG qualities), so a family trained on its photos alone can read that camera's signature as part of
the label: a real photo's noise, colour cast or double compression then looks like an edit or like blur
(issue 20's real-photo checks). ``train.<family>.camera_views`` adds, for each training photo, that many views
drawn from the ranges of ``train.camera``, with the photo's label: validation and test stay the photos as
they are, so every threshold and figure is measured on what the generator and the checks send.

A view is a pure function of the photo and its key (the photo's SHA-256, the view's index, the seed and the
ranges), so its frozen-trunk outputs are cached like any photo's (:func:`pipelines.train.features.trunk_features`
with ``view``), and a rerun draws the same views. ``resize=False`` leaves the resolution alone: for the blur
family, whose label is the sharpness a smaller upload would change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.data.synth.camera import to_jpeg
from pipelines.params import CameraAugment

GAMMA = 2.2          # sRGB's transfer curve, near enough: gains act on linear light, as a sensor's do


def develop(rgb: np.ndarray, rng: np.random.Generator, ranges: CameraAugment, resize: bool = True) -> np.ndarray:
    """``rgb`` (uint8 RGB) as another camera and upload would have made it, drawn from ``ranges``."""
    h, w = rgb.shape[:2]
    gains = 2.0 ** rng.uniform(-ranges.exposure, ranges.exposure) * \
        (1.0 + rng.uniform(-ranges.white_balance, ranges.white_balance, 3))
    linear = (rgb.astype(np.float32) / 255.0) ** GAMMA * gains.astype(np.float32)
    out = np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0
    if resize and ranges.resize < 1.0:
        scale = rng.uniform(ranges.resize, 1.0)
        small = (max(8, round(w * scale)), max(8, round(h * scale)))
        if small != (w, h):
            out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_AREA), (w, h),
                             interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(*ranges.noise)
    if sigma > 0:
        out = out + rng.normal(0.0, sigma, out.shape).astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
    decoded = cv2.imdecode(np.frombuffer(to_jpeg(out, quality), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class CameraView:
    """The ``index``-th camera view of every photo, for one seed and one set of ranges."""
    ranges: CameraAugment
    index: int
    seed: int
    resize: bool = True

    def digest(self) -> str:
        spec = {"ranges": self.ranges.model_dump(mode="json"), "index": self.index, "seed": self.seed,
                "resize": self.resize}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def key(self, sha256: str) -> str:
        """The view's cache key: never a photo's own SHA-256, and one per (photo, view)."""
        return hashlib.sha256(f"{sha256}:camera:{self.digest()}".encode()).hexdigest()

    def __call__(self, rgb: np.ndarray, key: str) -> np.ndarray:
        """The view of ``rgb``, whose cache key is ``key``: the draw is seeded by it."""
        return develop(rgb, np.random.default_rng(int(key[:16], 16)), self.ranges, self.resize)


def views(ranges: CameraAugment, count: int, seed: int, resize: bool = True) -> list[CameraView]:
    """The ``count`` camera views a family trains on besides the photos themselves."""
    return [CameraView(ranges, i, seed, resize) for i in range(count)]
