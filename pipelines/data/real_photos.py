"""Real photographs (shared/DATA.md), in two sets that never meet: training material and the checks.

A photo is named ``<source>:<name>`` in params.yaml ``real_photos``:

- ``skimage:<file>``: scikit-image's wheel (``skimage/data``), also the generator's backgrounds and splice sources;
- ``mate:<file>``: Debian's mate-backgrounds (``/usr/share/backgrounds/mate/nature``);
- ``wallpaper:<name>``: Debian's plasma-workspace-wallpapers (the largest JPEG of
  ``/usr/share/wallpapers/<name>/contents/images``);
- ``ultralytics:<file>``, ``sklearn:<file>``, ``matplotlib:<file>``: the photos those wheels ship
  (``assets/``, ``datasets/images/``, ``mpl-data/sample_data/``), which only the checks may use.

``real_photos.train`` is what the manipulation and blur families learn from (:func:`manipulation_samples`,
:func:`blur_samples`): authentic photos (crops, rescales, re-encoded at a camera's JPEG qualities) and the
same material edited (splice between two of them, copy-move, watermark, in-painted or smoothed region) or
blurred, so that "looks like a real photograph" carries no label. ``real_photos.checks`` is what
:mod:`pipelines.release.real_photos` scores the candidates on; the params loader refuses a check photo that
is also training material or the generator's (scikit-image's). ``make photos`` installs the Debian packages.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from pipelines.data.synth import manipulation as edits
from pipelines.data.synth.camera import (ANNOTATOR_BIAS, ANNOTATOR_LAPSE, ANNOTATOR_NOISE, DEFOCUS_PX_PER_LEVEL,
                                         MOTION_PX_PER_LEVEL, motion_kernel, to_jpeg)

MAX_SIDE = 1600            # px: a loaded photo is shrunk to this longest side (crops come out at 96-256 px)
JPEG_QUALITY = (70, 96)    # a phone camera's and a re-saving app's range
EDIT_KINDS = ("splice", "clone", "watermark", "synthetic", "inpaint")
class MissingPhoto(FileNotFoundError):
    """A real photo params.yaml names is not on this machine (``make photos`` installs the Debian ones)."""


def _package_dir(module: str, *parts: str) -> Path:
    # located without importing: importing ultralytics replaces PIL.Image.open
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPhoto(f"the {module} package is not installed")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def _wallpaper(name: str) -> Path:
    folder = Path("/usr/share/wallpapers") / name / "contents" / "images"
    files = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_size) if folder.is_dir() else []
    if not files:
        raise MissingPhoto(f"wallpaper {name}: no JPEG in {folder} (make photos installs plasma-workspace-wallpapers)")
    return files[-1]


SOURCES = {
    "skimage": lambda name: _package_dir("skimage", "data", name),
    "mate": lambda name: Path("/usr/share/backgrounds/mate/nature") / name,
    "wallpaper": _wallpaper,
    "ultralytics": lambda name: _package_dir("ultralytics", "assets", name),
    "sklearn": lambda name: _package_dir("sklearn", "datasets", "images", name),
    "matplotlib": lambda name: _package_dir("matplotlib", "mpl-data", "sample_data", name),
}


def path_of(ref: str) -> Path:
    """The file of a ``source:name`` reference."""
    source, _, name = ref.partition(":")
    if source not in SOURCES or not name:
        raise ValueError(f"real photo {ref!r}: expected <source>:<name> with source one of {sorted(SOURCES)}")
    path = SOURCES[source](name)
    if not path.is_file():
        hint = " (make photos installs mate-backgrounds)" if source == "mate" else ""
        raise MissingPhoto(f"real photo {ref}: {path} is missing{hint}")
    return path


@lru_cache(maxsize=64)
def load(ref: str) -> np.ndarray:
    """A real photo as uint8 RGB, its longest side at most ``MAX_SIDE``."""
    img = cv2.imread(str(path_of(ref)), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"real photo {ref}: {path_of(ref)} does not decode")
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)
    return rgb


def square_crop(rng: np.random.Generator, img: np.ndarray, size: int, min_frac: float = 0.3) -> np.ndarray:
    """A random square crop of ``min_frac``..1 of the short side, maybe mirrored, resized to ``size``."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(min_frac, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` after a JPEG round trip at ``quality`` (the generator's encoder, :func:`camera.to_jpeg`)."""
    buf = np.frombuffer(to_jpeg(rgb, int(quality)), np.uint8)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def camera_jpeg(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """A camera's JPEG, sometimes saved once more by an app at another quality."""
    out = jpeg(rgb, int(rng.integers(*JPEG_QUALITY)))
    return jpeg(out, int(rng.integers(*JPEG_QUALITY))) if rng.random() < 0.3 else out


# --- edits on real photos ------------------------------------------------------------------------------

def inpaint(img: np.ndarray, rng: np.random.Generator) -> None:
    """An object removed: a blob of the photo filled in from its surroundings (OpenCV's Telea in-painting)."""
    size = img.shape[0]
    mask = np.zeros(img.shape[:2], np.uint8)
    cx, cy = (int(v) for v in rng.integers(size // 6, size - size // 6, 2))
    for _ in range(int(rng.integers(2, 5))):
        axes = tuple(int(v) for v in rng.integers(size // 20, size // 7, 2))
        cv2.ellipse(mask, (cx + int(rng.integers(-size // 12, size // 12)), cy + int(rng.integers(-size // 12, size // 12))),
                    axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    img[:] = cv2.inpaint(img, mask, 5, cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS)


def splice_from(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> None:
    """A region of another real photo (``donor``, same size) pasted in with a hard or feathered edge."""
    size = img.shape[0]
    side = int(size * rng.uniform(0.22, 0.42))
    x, y = (int(v) for v in rng.integers(0, size - side, 2))
    sx, sy = (int(v) for v in rng.integers(0, donor.shape[0] - side, 2))
    mask = edits._soft_mask(rng, side, rng.uniform(0, 1.5))
    roi = img[y:y + side, x:x + side].astype(np.float32)
    patch = donor[sy:sy + side, sx:sx + side].astype(np.float32)
    img[y:y + side, x:x + side] = np.clip(roi * (1 - mask) + patch * mask, 0, 255).astype(np.uint8)


def edit(img: np.ndarray, donor: np.ndarray, kind: str, rng: np.random.Generator, visibility) -> bool:
    """Apply edit ``kind`` to ``img`` in place; True when a person could see it, by the rule that labels the
    generated photos (params.yaml ``labels.visibility``: a clone here has no object to move, only its coarse trace)."""
    before = img.copy()
    if kind == "splice":
        splice_from(img, donor, rng)
    elif kind == "inpaint":
        inpaint(img, rng)
    else:
        edits.APPLY[kind](img, rng)
    if edits.trace(before, img) < visibility.manipulation_min_trace:
        return False
    return kind != "clone" or edits.coarse_trace(before, img) >= visibility.clone_min_coarse_trace


# --- training samples ------------------------------------------------------------------------------------

@dataclass
class Samples:
    images: list[np.ndarray]          # uint8 RGB, size x size
    targets: np.ndarray               # float32 [N]
    kinds: list[str]                  # "authentic", an edit kind, or "gaussian:<sigma>" / "motion:<px>"


def another_look(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """The same scene as another camera, film or app renders it, over the whole frame (no edit): black and white, the
    hue turned, the colour channels in a random order, a gamma, or a quarter turn; one of them."""
    how = int(rng.integers(5))
    if how == 0:
        return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    if how == 1:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(20, 160))) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if how == 2:
        return np.ascontiguousarray(img[..., rng.permutation(3)])
    if how == 3:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.5, 2.0), 0, 255).astype(np.uint8)
        return lut[img]
    return np.ascontiguousarray(np.rot90(img, int(rng.integers(1, 4))))


def manipulation_samples(refs: Sequence[str], n: int, size: int, seed: int, visibility,
                         edited_share: float = 0.5, looks: float = 0.0) -> Samples:
    """``n`` real-photo samples of ``refs``, ``edited_share`` of them edited visibly (target 1), the rest authentic
    (target 0), interleaved: random square crops, edited or not, saved as a camera's JPEG. ``looks``: the share of
    crops given :func:`another_look` first (edited or not alike), so that a scene's colours and orientation say
    nothing either way."""
    if not 0.0 <= edited_share <= 1.0:
        raise ValueError(f"edited_share {edited_share} is not a share")
    rng = np.random.default_rng(seed)
    photos = [load(r) for r in refs]
    images, targets, kinds = [], [], []
    while len(images) < n:
        k = int(rng.integers(len(photos)))
        img = square_crop(rng, photos[k], size)
        if looks and rng.random() < looks:
            img = another_look(rng, img)
        if sum(targets) >= edited_share * (len(images) + 1):           # this one authentic keeps the share
            images.append(camera_jpeg(rng, img))
            targets.append(0.0)
            kinds.append("authentic")
            continue
        kind = str(rng.choice(EDIT_KINDS))
        donor = square_crop(rng, photos[(k + 1 + int(rng.integers(len(photos) - 1))) % len(photos)], size) \
            if len(photos) > 1 else square_crop(rng, photos[k], size)
        base = camera_jpeg(rng, img) if rng.random() < 0.7 else img     # edited after the camera's JPEG, mostly
        if not edit(base, donor, kind, rng, visibility):
            continue                                                    # invisible: no label either way
        images.append(camera_jpeg(rng, base))
        targets.append(1.0)
        kinds.append(kind)
    return Samples(images, np.asarray(targets, np.float32), kinds)


def gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) if sigma > 0 else img


def motion(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """A straight motion streak of ``length`` px at ``angle`` (radians)."""
    if length <= 1:
        return img
    kernel = motion_kernel(length, angle)           # the generator's streak (pipelines.data.synth.camera)
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def blur_level(kind: str, strength: float) -> float:
    """The annotators' perceived level (0 clear, 1 slight, 2 obvious) of a Gaussian sigma or a motion length in
    px at 256 px: a Gaussian of sigma s spreads like a defocus disk of radius 2s (same second moment)."""
    return 2 * strength / DEFOCUS_PX_PER_LEVEL if kind == "gaussian" else strength / MOTION_PX_PER_LEVEL


def expected_score(level: float) -> float:
    """The annotators' expected blur score (sum of votes / 6) of a photo at ``level``: each votes
    clip(round(level + bias + noise), 0, 2), or at random with the lapse rate (pipelines.data.synth.camera)."""
    def above(x: float) -> float:                 # P(level + bias + noise >= x)
        return 0.5 * (1 + math.erf((level + bias - x) / (ANNOTATOR_NOISE * math.sqrt(2))))

    votes = []
    for bias in ANNOTATOR_BIAS:
        votes.append((1 - ANNOTATOR_LAPSE) * (above(0.5) + above(1.5)) + ANNOTATOR_LAPSE * 1.0)
    return float(sum(votes) / (2 * len(votes)))


def blur_target(level: float) -> float:
    """The blur family's target for a real photo blurred to ``level``: what the annotators would score it (the
    generated photos' label, :func:`expected_score`) and, past obvious blur where their score stops, still
    rising: E + (1 - E) * (1 - exp(-(level / 6)^2)), which moves E by under 0.03 up to level 1 (slight blur)."""
    e = expected_score(level)
    return e + (1 - e) * (1 - math.exp(-(level / 6) ** 2))


def blur_samples(refs: Sequence[str], n: int, size: int, seed: int, max_sigma: float, max_motion: float) -> Samples:
    """``n`` real-photo samples blurred at a known strength over the whole range (a fifth sharp), with
    :func:`blur_target` targets; the strength scales with ``size`` / 256 as the generator's does."""
    rng = np.random.default_rng(seed)
    photos = [load(r) for r in refs]
    images, targets, kinds = [], [], []
    px = size / 256
    for i in range(n):
        img = square_crop(rng, photos[int(rng.integers(len(photos)))], size)
        u = rng.random()
        if u < 0.2:
            kind, strength, out = "gaussian", 0.0, img
        elif u < 0.6:
            kind, strength = "gaussian", float(rng.uniform(0.3, max_sigma))
            out = gaussian(img, strength * px)
        else:
            kind, strength = "motion", float(rng.uniform(2, max_motion))
            out = motion(img, strength * px, float(rng.uniform(0, np.pi)))
        images.append(camera_jpeg(rng, out))
        targets.append(blur_target(blur_level(kind, strength)))
        kinds.append(f"{kind}:{strength:.2f}")
    return Samples(images, np.asarray(targets, np.float32), kinds)
