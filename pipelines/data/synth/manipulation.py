"""Edits made after capture: splice, clone-stamp, pasted watermark, smooth synthetic region.

They run on the final 8-bit photo, after the sensor noise, as a real edit would: a spliced or
synthesised region lacks the camera's noise and JPEG history, which is what forensics looks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.data.synth.backgrounds import SKIMAGE_PHOTOS, random_crop, real_image

TYPES = ("splice", "clone", "watermark", "synthetic")
WATERMARKS = ("SAMPLE", "(c) dealz4u", "www.best-deals.shop", "STOCK PHOTO", "PREVIEW", "(c) megastore")


@dataclass(frozen=True)
class Pasted:
    """Content an edit put over the photo in place of what was there (a splice's photo, a clone's patch): the
    top-left corner of its square and its blend weight there (side x side, 0..1). What it covers, a person no
    longer sees (:meth:`covered`); a watermark or a smoothed region leaves the content under it visible."""
    x: int
    y: int
    weight: np.ndarray

    def covered(self, alpha: np.ndarray) -> float:
        """The share of an object's pixels (``alpha``: its alpha in the frame, 0..1) under this content."""
        total = float(alpha.sum())
        if total <= 0:
            return 0.0
        under = alpha[self.y:self.y + self.weight.shape[0], self.x:self.x + self.weight.shape[1]]
        return float((under * self.weight[:under.shape[0], :under.shape[1]]).sum()) / total


def _region(rng, size, lo=0.22, hi=0.42):
    side = int(size * rng.uniform(lo, hi))
    x, y = rng.integers(0, size - side), rng.integers(0, size - side)
    return x, y, side


def _soft_mask(rng, side, feather):
    m = np.zeros((side, side), np.float32)
    if rng.random() < 0.5:
        cv2.ellipse(m, (side // 2, side // 2), (side // 2 - 1, side // 2 - 1), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    else:
        m[1:-1, 1:-1] = 1.0
    if feather > 0:
        m = cv2.GaussianBlur(m, (0, 0), feather)
    return m[..., None]


def splice(img, rng) -> Pasted:
    """A square (or disc) of a real photo blended in; returns where it went."""
    size = img.shape[0]
    x, y, side = _region(rng, size)
    src = random_crop(rng, real_image(str(rng.choice(SKIMAGE_PHOTOS))), side, 0.2)
    if src.ndim == 2:
        src = np.repeat(src[..., None], 3, axis=2)
    m = _soft_mask(rng, side, rng.uniform(0, 1.5))
    roi = img[y:y + side, x:x + side].astype(np.float32)
    img[y:y + side, x:x + side] = np.clip(roi * (1 - m) + src * 255 * m, 0, 255).astype(np.uint8)
    return Pasted(int(x), int(y), m[..., 0])


@dataclass(frozen=True)
class Cloned:
    """A copy-move: its source and destination squares ``(x, y, side)`` and the patch as pasted."""
    squares: tuple[tuple[int, int, int], tuple[int, int, int]]
    pasted: Pasted


def clone(img, rng):
    """Copy-move within the photo; returns its squares and the patch as pasted (:class:`Cloned`)."""
    size = img.shape[0]
    sx, sy, side = _region(rng, size, 0.15, 0.3)
    dx, dy = rng.integers(0, size - side), rng.integers(0, size - side)
    m = _soft_mask(rng, side, rng.uniform(0.5, 2.5))
    patch = img[sy:sy + side, sx:sx + side].astype(np.float32)
    roi = img[dy:dy + side, dx:dx + side].astype(np.float32)
    img[dy:dy + side, dx:dx + side] = np.clip(roi * (1 - m) + patch * m, 0, 255).astype(np.uint8)
    return Cloned(((int(sx), int(sy), int(side)), (int(dx), int(dy), int(side))), Pasted(int(dx), int(dy), m[..., 0]))


def clone_object_share(objects: np.ndarray, squares) -> float:
    """The larger share of object pixels (``objects``: the product's and items' alpha in the frame, 0..1) in a
    clone's source and destination squares. 0: backdrop copied onto backdrop, where the backdrop's texture just
    goes on and no person sees an edit; a product part moved, or backdrop pasted over the product, shows."""
    return float(max(objects[y:y + s, x:x + s].mean() for x, y, s in squares))


def watermark(img, rng):
    size = img.shape[0]
    layer = np.zeros(img.shape[:2], np.uint8)
    text = str(rng.choice(WATERMARKS))
    scale = size / 256 * rng.uniform(0.5, 1.1)
    thick = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    if rng.random() < 0.5:  # tiled diagonal marks
        for yy in range(th + 4, size + tw, int(th * 4 + 20)):
            cv2.putText(layer, text, (int(rng.integers(-tw // 2, 10)), yy), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                        thick, cv2.LINE_AA)
        rot = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(20, 45), 1.0)
        layer = cv2.warpAffine(layer, rot, (size, size))
    else:
        x = int(rng.integers(2, max(3, size - tw - 2)))
        y = int(rng.integers(th + 2, size - 2))
        cv2.putText(layer, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    colour = np.array((255, 255, 255) if rng.random() < 0.7 else (20, 20, 20), np.float32)
    a = layer.astype(np.float32)[..., None] / 255.0 * rng.uniform(0.3, 0.65)
    img[:] = np.clip(img * (1 - a) + colour * a, 0, 255).astype(np.uint8)


def synthetic(img, rng):
    """A region regenerated smooth and noiseless, as generative in-painting leaves it."""
    size = img.shape[0]
    x, y, side = _region(rng, size, 0.25, 0.45)
    roi = img[y:y + side, x:x + side]
    smooth = cv2.bilateralFilter(cv2.GaussianBlur(roi, (0, 0), rng.uniform(1.5, 3.0)), 7, 40, 5).astype(np.float32)
    smooth = (smooth - smooth.mean((0, 1))) * rng.uniform(1.0, 1.25) + smooth.mean((0, 1)) * rng.uniform(0.95, 1.08)
    m = _soft_mask(rng, side, side * 0.08)
    img[y:y + side, x:x + side] = np.clip(roi * (1 - m) + smooth * m, 0, 255).astype(np.uint8)


APPLY = {"splice": splice, "clone": clone, "watermark": watermark, "synthetic": synthetic}

# An 8-bit pixel whose luminance moved by at most this much was not touched by the edit (rounding of the blend).
TRACE_EPS = 2 / 255


def trace(before_u8: np.ndarray, after_u8: np.ndarray) -> float:
    """The visible trace of an edit: the mean |luminance change| (0..1) over the pixels it changed by more than
    ``TRACE_EPS``; 0 when it changed none.

    Mean over the changed pixels, not over the photo, so that a watermark's thin strokes or a small splice
    count as strongly as they look, however little of the frame they cover. Its floor is the sensor noise:
    a clone of flat backdrop onto flat backdrop, or a smooth synthetic region on one, only swaps or smooths
    away the noise, and the pixels that noise alone moves past ``TRACE_EPS`` average about 0.009-0.02 (more
    with more noise); a watermark drawn at alpha 0.3-0.65 moves its strokes by 0.024 and more unless drawn
    dark on a near-black backdrop, a splice by 0.05 and more (``benchmarks/label_visibility.py``). Luminance,
    not the most changed channel as for dirt: here the photo already carries per-channel sensor noise, which
    the luminance average damps.
    """
    weights = np.float32([0.299, 0.587, 0.114])
    change = np.abs(after_u8.astype(np.float32) @ weights - before_u8.astype(np.float32) @ weights) / 255.0
    changed = change > TRACE_EPS
    return float(change[changed].mean()) if changed.any() else 0.0


COARSE_SIGMA = 4.0  # px at 256 px: the scale at which a person sees a patch as out of place, not its grain


def coarse_trace(before_u8: np.ndarray, after_u8: np.ndarray) -> float:
    """The edit's trace at a coarse scale: the mean |luminance change| (0..1), over the pixels the edit changed,
    of both photos blurred at ``COARSE_SIGMA``. A clone of gravel onto gravel swaps every pebble (a high
    :func:`trace`) but leaves the coarse picture as it was (0.01-0.02); a square of planks that breaks their
    lines, or a patch of a real photo moved across it, changes it (0.03-0.12)."""
    weights = np.float32([0.299, 0.587, 0.114])
    b, a = (cv2.GaussianBlur(x.astype(np.float32) @ weights / 255.0, (0, 0), COARSE_SIGMA) for x in (before_u8, after_u8))
    changed = np.abs(after_u8.astype(np.float32) @ weights - before_u8.astype(np.float32) @ weights) / 255.0 > TRACE_EPS
    return float(np.abs(a - b)[changed].mean()) if changed.any() else 0.0


def pasted(done) -> Pasted | None:
    """The content an edit pasted over the photo (what :func:`manipulate` returned): a splice's or a clone's, else
    None."""
    return done.pasted if isinstance(done, Cloned) else done if isinstance(done, Pasted) else None


def manipulate(img_u8: np.ndarray, rng: np.random.Generator) -> tuple[str, object]:
    """Apply one edit of a random kind in place: ``(kind, what the edit returned)`` (a splice's :class:`Pasted`, a
    clone's :class:`Cloned`, None)."""
    kind = str(rng.choice(TYPES))
    return kind, APPLY[kind](img_u8, rng)
