"""The camera: lighting, optical blur, sensor noise and JPEG; and what three annotators see.

Blur strength is in px at 256 px: a defocus disk radius, or a motion-streak length. The
perceived blur level (0 clear, 1 slight, 2 obvious) is a monotone function of the strength;
each annotator votes the rounded level plus their own bias and noise.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

LIGHTING_GAIN = {"normal": (0.85, 1.1), "dark": (0.32, 0.55), "bright": (1.25, 1.5), "warm": (0.85, 1.05)}
ANNOTATOR_BIAS = (0.12, -0.1, 0.0)
ANNOTATOR_NOISE = 0.38
ANNOTATOR_LAPSE = 0.03
DEFOCUS_PX_PER_LEVEL = 1.8
MOTION_PX_PER_LEVEL = 4.5


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    return yy, xx


def light(img: np.ndarray, rng: np.random.Generator, mode: str,
          white_balance_sd: float) -> tuple[np.ndarray, float]:
    """Global gain, a linear light fall-off in a random direction, colour temperature, vignette. What the camera's
    white balance leaves of the light's colour is a gain per channel of 1 +- ``white_balance_sd``: at 0.03 a silver
    laptop came out lilac one photo in several (green 8% under red and blue)."""
    gain = rng.uniform(*LIGHTING_GAIN[mode])
    yy, xx = _grid(img.shape[0])
    theta = rng.uniform(0, 2 * np.pi)
    ramp = 1.0 + rng.uniform(0.05, 0.35) * (xx * np.cos(theta) + yy * np.sin(theta))
    vignette = 1.0 - rng.uniform(0.0, 0.35) * (xx ** 2 + yy ** 2)
    tint = np.array([1.0, 1.0, 1.0], np.float32) + rng.normal(0, white_balance_sd, 3).astype(np.float32)
    if mode == "warm":
        tint *= np.array([1.1, 1.0, 0.8], np.float32)
    out = img * (gain * ramp * vignette)[..., None] * tint
    return np.clip(out, 0, 1), float(gain)


def perceived_level(kind: str, strength: float) -> float:
    if kind == "defocus":
        return strength / DEFOCUS_PX_PER_LEVEL
    if kind == "motion":
        return strength / MOTION_PX_PER_LEVEL
    return 0.0


def sample_blur(rng: np.random.Generator) -> tuple[str, float]:
    """A blur kind and continuous strength (px at 256 px) spanning slight to obvious blur."""
    level = rng.uniform(0.45, 2.6)
    if rng.random() < 0.55:
        return "defocus", level * DEFOCUS_PX_PER_LEVEL
    return "motion", level * MOTION_PX_PER_LEVEL


def blur(img: np.ndarray, rng: np.random.Generator, kind: str, strength_px: float) -> np.ndarray:
    if kind == "none" or strength_px <= 0:
        return img
    if kind == "defocus":
        r = strength_px
        k = int(np.ceil(r)) * 2 + 1
        kernel = np.zeros((k * 4, k * 4), np.float32)
        cv2.circle(kernel, (k * 2, k * 2), max(1, int(round(r * 4))), 1.0, -1, cv2.LINE_AA)
        kernel = cv2.resize(kernel, (k, k), interpolation=cv2.INTER_AREA)
    else:
        kernel = motion_kernel(strength_px, rng.uniform(0, np.pi))
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A straight streak of ``length`` px at ``angle`` (radians), drawn antialiased at 4x and area-resized to an odd
    square side (not normalised)."""
    k = int(np.ceil(length)) | 1
    kernel = np.zeros((k * 4, k * 4), np.float32)
    c = k * 2
    dx, dy = np.cos(angle) * length * 2, np.sin(angle) * length * 2
    cv2.line(kernel, (int(c - dx), int(c - dy)), (int(c + dx), int(c + dy)), 1.0, 4, cv2.LINE_AA)
    return cv2.resize(kernel, (k, k), interpolation=cv2.INTER_AREA)


def spot_contrast_kept(kind: str, strength_px: float, radius_px: float) -> float:
    """The share of a small spot's contrast left at its centre after ``blur(img, rng, kind, strength_px)``.

    A round spot of radius r and contrast c, blurred by a kernel K centred on it, keeps at its centre
    c * (the mass of K within r of K's centre): the kernel spreads the spot's change outward and mixes in
    the surroundings by exactly the mass that falls outside the spot. The usual rule of thumb is the same
    thing for a Gaussian kernel of sigma s: 1 - exp(-r^2 / (2 s^2)). ``blur`` above does not use Gaussians,
    so the mass is taken for the two kernels it does draw (no random draw needed: the mass within a circle
    does not depend on the motion angle):

    - defocus: a uniform disk of radius R = strength_px; the part within r holds min(1, r^2 / R^2). (Its
      sigma-equivalent, the per-axis standard deviation of a uniform disk, is R / 2; a Gaussian of that sigma
      would give 1 - exp(-2 r^2 / R^2), twice the true share for small spots: a Gaussian holds more of its
      mass near its centre than a flat disk of the same spread.)
    - motion: a 1-px line of length L = strength_px through the centre (``cv2.line`` from c - L/2 to c + L/2
      at 1x); the part within r holds min(1, 2 r / L). (Sigma-equivalent along the streak L / sqrt(12),
      none across it.)
    """
    if kind == "none" or strength_px <= 0:
        return 1.0
    if kind == "defocus":
        return float(min(1.0, (radius_px / strength_px) ** 2))
    if kind == "motion":
        return float(min(1.0, 2.0 * radius_px / strength_px))
    raise ValueError(f"unknown blur kind {kind!r}")


def annotate(rng: np.random.Generator, kind: str, strength_px: float) -> list[int]:
    """Three votes: the perceived level plus each annotator's bias and noise; now and then a lapse
    (a vote at random), which is where contradictory 0-and-2 photos come from."""
    level = perceived_level(kind, strength_px)
    votes = []
    for bias in ANNOTATOR_BIAS:
        if rng.random() < ANNOTATOR_LAPSE:
            votes.append(int(rng.integers(0, 3)))
        else:
            votes.append(int(np.clip(np.rint(level + bias + rng.normal(0, ANNOTATOR_NOISE)), 0, 2)))
    return votes


def sensor_noise(img: np.ndarray, rng: np.random.Generator, gain: float, level: float) -> np.ndarray:
    """Gaussian read noise, stronger in the dark (the camera pushes its ISO)."""
    if level <= 0:
        return img
    sigma = level * rng.uniform(0.006, 0.02) * max(1.0, 1.0 / max(gain, 0.1)) ** 0.8
    cv2.setRNGSeed(int(rng.integers(2**31)))  # OpenCV's generator is 5x faster than numpy's here
    noise = np.empty(img.shape, np.float32)
    cv2.randn(noise, 0.0, sigma)
    return np.clip(img + noise, 0, 1)


def to_jpeg(img_rgb_u8: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb_u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
