"""Product sprites (back or lid view) of a SKU, with anti-tamper stickers and dirt spots.

A sprite is a float32 RGBA canvas plus labelled boxes in sprite pixels. The SKU fixes the body
(aspect, corners, colour), the camera-module layout and the logo; the photo's random stream fixes
the finish, the stickers present and the dirt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipelines.data.synth import draw
from pipelines.data.synth.catalog import Sku

# lens centres in units of the body width, from the body's top-left corner; (module box or None)
CAMERA_LAYOUTS: dict[str, tuple[list[tuple[float, float]], tuple[float, float, float, float] | None]] = {
    "none": ([], None),
    "single_left": ([(0.2, 0.17)], (0.08, 0.06, 0.32, 0.30)),
    "dual_vertical": ([(0.2, 0.14), (0.2, 0.32)], (0.09, 0.05, 0.31, 0.42)),
    "dual_diagonal": ([(0.17, 0.13), (0.33, 0.29)], (0.06, 0.04, 0.44, 0.42)),
    "triple_square": ([(0.17, 0.13), (0.17, 0.33), (0.35, 0.23)], (0.06, 0.03, 0.47, 0.44)),
    "triple_diagonal": ([(0.15, 0.12), (0.27, 0.24), (0.39, 0.36)], (0.05, 0.03, 0.49, 0.46)),
    "triple_left": ([(0.18, 0.12), (0.18, 0.27), (0.18, 0.42)], None),
    "quad_left": ([(0.16, 0.12), (0.32, 0.12), (0.16, 0.28), (0.32, 0.28)], (0.06, 0.03, 0.42, 0.38)),
    "bar": ([(0.3, 0.22), (0.48, 0.22)], (0.0, 0.15, 1.0, 0.29)),
    "round_centre": ([(0.42, 0.2), (0.58, 0.2)], (0.3, 0.08, 0.7, 0.32)),
}

# anti-tamper sticker spots per product type: centre in body fractions, size in body-width units
STICKER_SPOTS: dict[str, list[tuple[float, float]]] = {
    "phone": [(0.5, 0.9)],
    "tablet": [(0.12, 0.93), (0.88, 0.93)],
    "laptop": [(0.07, 0.88), (0.93, 0.88)],
    "headphones": [],
}
STICKER_SIZE = {"phone": (0.26, 0.1), "tablet": (0.12, 0.06), "laptop": (0.075, 0.05), "headphones": (0, 0)}
# dirt colours: dust, grey grime, dark grease, light residue
DIRT_COLOURS = ((0.33, 0.25, 0.17), (0.45, 0.42, 0.38), (0.2, 0.18, 0.15), (0.78, 0.76, 0.7))
# dirt keeps this share of the product's long side (about 2 px of a 256 px photo) inside the body's edge
DIRT_INSET = 0.015


@dataclass(frozen=True)
class DirtSpot:
    """One dirt spot as drawn, with what a person's eye has to go on (measured in the sprite, no random draw)."""
    box: tuple[float, float, float, float]  # sprite px
    centre: tuple[float, float]             # sprite px
    area: float       # px of the sprite the spot covers (sum of its antialiased coverage, 0..1 per px)
    contrast: float   # mean change (0..1) it made per covered px of the product, in its most changed RGB channel


@dataclass
class Sprite:
    rgba: np.ndarray
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)  # sprite px: stickers
    sticker_spots: list[tuple[float, float, float, float]] = field(default_factory=list)  # every spot, px
    dirt: list[DirtSpot] = field(default_factory=list)  # every dirt spot drawn, in drawing order


def _lens(cv, cx, cy, r, rng):
    draw.circle(cv, cx, cy, r * 1.25, (0.18, 0.18, 0.2))
    draw.circle(cv, cx, cy, r, (0.03, 0.03, 0.05))
    draw.circle(cv, cx, cy, r * 0.55, (0.08, 0.1, 0.18))
    draw.circle(cv, cx - r * 0.3, cy - r * 0.3, max(0.8, r * 0.18), (0.85, 0.88, 0.95), alpha=0.8)


def _camera(cv, sku: Sku, x0, y0, w, rng, scale=1.0) -> tuple[float, float, float, float] | None:
    lenses, module = CAMERA_LAYOUTS[sku.family.camera]
    body = np.array(sku.rgb) / 255.0
    if module:
        mx0, my0, mx1, my1 = module
        mod_rgb = (0.06, 0.06, 0.07) if sku.family.camera == "bar" else draw.contrast_of(body, 0.1)
        draw.rounded_rect(cv, x0 + mx0 * w, y0 + my0 * w, x0 + mx1 * w, y0 + my1 * w,
                          0.08 * w if sku.family.camera != "round_centre" else 0.2 * w, mod_rgb)
    r = 0.062 * w * scale
    for lx, ly in lenses:
        _lens(cv, x0 + lx * w, y0 + ly * w, r, rng)
    # the camera's footprint (module, lens rings, flash) with a lens radius of margin: where dirt is not drawn
    parts = [(x0 + lx * w - 1.25 * r, y0 + ly * w - 1.25 * r, x0 + lx * w + 1.25 * r, y0 + ly * w + 1.25 * r)
             for lx, ly in lenses]
    if lenses:  # flash beside the last lens
        fx, fy = x0 + (lenses[-1][0] + 0.12) * w, y0 + lenses[-1][1] * w
        draw.circle(cv, fx, fy, r * 0.35, (0.95, 0.9, 0.7))
        parts.append((fx - 0.35 * r, fy - 0.35 * r, fx + 0.35 * r, fy + 0.35 * r))
    if module:
        parts.append((x0 + mx0 * w, y0 + my0 * w, x0 + mx1 * w, y0 + my1 * w))
    if not parts:
        return None
    return (min(p[0] for p in parts) - r, min(p[1] for p in parts) - r,
            max(p[2] for p in parts) + r, max(p[3] for p in parts) + r)


def _logo(cv, kind, cx, cy, size, body):
    tone = draw.contrast_of(body, 0.16)
    if kind in ("bitten", "bitten_centre"):
        draw.circle(cv, cx, cy, size * 0.5, tone)
        draw.circle(cv, cx + size * 0.5, cy - size * 0.05, size * 0.2, body)  # the bite
        draw.ellipse(cv, cx + size * 0.08, cy - size * 0.62, size * 0.08, size * 0.16, 30, tone)  # leaf
    elif kind == "g":
        draw.text(cv, "G", cx - size * 0.35, cy + size * 0.35, size, tone, thickness=2)
    elif kind in ("wordmark", "cup_wordmark"):
        draw.text(cv, "GALAXO" if kind == "wordmark" else "SNC", cx - size * 1.2, cy, size * 0.45, tone)
    elif kind == "batwing":
        draw.circle(cv, cx, cy, size * 0.45, tone, alpha=1.0)
        draw.poly(cv, [(cx - size * 0.3, cy + size * 0.2), (cx - size * 0.15, cy - size * 0.25), (cx, cy),
                       (cx + size * 0.15, cy - size * 0.25), (cx + size * 0.3, cy + size * 0.2)], body)
    elif kind == "stripe":
        draw.rounded_rect(cv, cx - size * 0.8, cy - size * 0.12, cx + size * 0.8, cy + size * 0.12, 2, tone)
    elif kind == "corner_wordmark":
        draw.text(cv, "thinkbox", cx, cy, size * 0.4, (0.75, 0.75, 0.75))
        draw.circle(cv, cx + size * 2.4, cy - size * 0.35, max(1.0, size * 0.08), (0.85, 0.1, 0.1))
    elif kind == "rings":
        for k in range(1, 4):
            draw.ellipse(cv, cx, cy, size * 0.25 * k, size * 0.25 * k, 0, tone, thickness=1, alpha=0.7)
    elif kind == "cup_b":
        draw.circle(cv, cx, cy, size * 0.42, (0.85, 0.12, 0.15) if body[0] < 0.6 else (0.95, 0.95, 0.95))
        draw.text(cv, "b", cx - size * 0.2, cy + size * 0.22, size * 0.7, body, thickness=2)


def _finish(cv, mask, rng):
    """Material: a vertical sheen and a soft specular band on glossy finishes."""
    draw.shade(cv, mask, rng.uniform(1.0, 1.12), rng.uniform(0.86, 1.0), axis=int(rng.random() < 0.5))
    if rng.random() < 0.5:
        h, w = cv.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(-1, 1)
        band = np.exp(-(((xx - w * rng.uniform(0.2, 0.8)) + a * (yy - h / 2)) / (0.12 * w)) ** 2)
        band *= rng.uniform(0.08, 0.22) * (mask.astype(np.float32) / 255.0)
        cv[..., :3] += band[..., None]


# how glossy each product type's body is under the shaded style: the share of the room's light its surface mirrors
GLOSS = {"phone": (0.10, 0.24), "tablet": (0.08, 0.18), "laptop": (0.04, 0.10), "headphones": (0.03, 0.08)}


def _room(h: int, w: int, rng) -> np.ndarray:
    """What a product lying in a room mirrors (h x w, 0..1): a ceiling brighter towards one side, and one or two
    soft windows or lamps, stretched and tilted at random."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h, 1) - 0.5, xx / max(w, 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    env = 0.35 + 0.25 * (xx * np.cos(theta) + yy * np.sin(theta))
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        half_u, half_v = rng.uniform(0.08, 0.3), rng.uniform(0.3, 0.9)
        window = np.clip(1.0 - np.maximum(np.abs(u) / half_u, np.abs(v) / half_v), 0, None)
        env += rng.uniform(0.5, 1.0) * np.clip(window * 4.0, 0, 1)
    return cv2.GaussianBlur(np.clip(env, 0, 1.6), (0, 0), max(1.0, 0.03 * max(h, w)))


def _relief(cv, mask, ptype: str, rng) -> None:
    """The shaded style: a body with rounded edges lit from one side, glints where the rim faces the light, and the
    room mirrored in its glass or metal (``GLOSS``). Drawn before stickers and dirt, so a dirt spot's contrast is
    measured on the body as the camera sees it."""
    body = mask > 127
    if not body.any():
        return
    a = mask.astype(np.float32) / 255.0
    h, w = mask.shape
    radius = max(1.5, 0.06 * min(h, w) if ptype != "headphones" else 0.18 * min(h, w))
    dist = cv2.distanceTransform(body.astype(np.uint8), cv2.DIST_L2, 5)
    tilt = np.clip(1.0 - dist / radius, 0.0, 1.0)            # sine of the surface's slope: 1 at the rim, 0 where flat
    smooth = cv2.GaussianBlur(a, (0, 0), radius / 2)
    gy, gx = np.gradient(smooth)
    norm = np.hypot(gx, gy) + 1e-6
    nx, ny, nz = -gx / norm * tilt, -gy / norm * tilt, np.sqrt(1.0 - tilt ** 2)   # the outward normal
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(35), np.radians(65))
    lx, ly, lz = np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)
    lit = np.clip(nx * lx + ny * ly + nz * lz, 0.0, None) / lz        # 1 on the flat face
    shade = (0.25 + 0.75 * lit) * a + (1.0 - a)
    hx, hy, hz = lx, ly, lz + 1.0                                      # half-way between the light and the camera
    hn = np.sqrt(hx * hx + hy * hy + hz * hz)
    glint = np.clip((nx * hx + ny * hy + nz * hz) / hn, 0.0, 1.0) ** 40 * tilt * a
    lo, hi = GLOSS[ptype]
    gloss = rng.uniform(lo, hi)
    room = _room(h, w, rng)
    rgb = cv[..., :3]
    rgb *= shade[..., None]
    rgb += (gloss * a * room)[..., None] * (1.0 - rgb)                 # the room mirrored (a screen blend)
    rgb += (rng.uniform(0.3, 0.7) * glint)[..., None]
    np.clip(rgb, 0.0, 1.0, out=rgb)


def _body_sprite(sku: Sku, long_side: int, rng) -> tuple[np.ndarray, float, float, float, float, np.ndarray]:
    """Canvas and body rectangle (x0, y0, w, h) of a flat product, drawn with its frame."""
    aspect = sku.family.aspect
    if aspect < 1:
        h = long_side
        w = h * aspect
    else:
        w = long_side
        h = w / aspect
    pad = 3
    cv = draw.canvas(int(np.ceil(h)) + 2 * pad, int(np.ceil(w)) + 2 * pad)
    body = np.array(sku.rgb) / 255.0
    r = sku.family.corner * min(w, h)
    x0, y0 = pad, pad
    draw.rounded_rect(cv, x0, y0, x0 + w, y0 + h, r, draw.darker(body, 0.7))  # frame / edge
    mask = draw.rounded_rect(cv, x0 + 1.2, y0 + 1.2, x0 + w - 1.2, y0 + h - 1.2, max(0, r - 1.2), body)
    return cv, x0, y0, w, h, mask


def _headphones(sku: Sku, long_side: int, rng) -> tuple[np.ndarray, np.ndarray]:
    h = long_side
    w = h * sku.family.aspect
    pad = 3
    cv = draw.canvas(int(np.ceil(h)) + 2 * pad, int(np.ceil(w)) + 2 * pad)
    body = np.array(sku.rgb) / 255.0
    cx = pad + w / 2
    band_r = w * 0.42
    draw.ellipse(cv, cx, pad + band_r + 1, band_r, band_r, 0, draw.darker(body, 0.85),
                 thickness=max(2, w * 0.07), start=180, end=360)
    draw.ellipse(cv, cx, pad + band_r + 1, band_r * 0.93, band_r * 0.93, 0, (0.15, 0.15, 0.16),
                 thickness=max(1, w * 0.025), start=200, end=340, alpha=0.8)
    masks = []
    for side in (-1, 1):
        ccx = cx + side * w * 0.36
        ccy = pad + h * 0.66
        draw.line(cv, (ccx, pad + band_r + 1), (ccx, ccy - h * 0.2), draw.darker(body, 0.6), max(1, w * 0.03))
        masks.append(draw.ellipse(cv, ccx, ccy, w * 0.15, h * 0.25, 0, body))
        draw.ellipse(cv, ccx - side * w * 0.09, ccy, w * 0.07, h * 0.22, 0, (0.12, 0.12, 0.13), alpha=0.9)
        _logo(cv, sku.family.logo, ccx + side * w * 0.02, ccy, w * 0.12, body)
    mask = np.maximum(masks[0], masks[1])
    _finish(cv, mask, rng)
    return cv, mask


def _sticker(cv, x0, y0, x1, y1, rng):
    """A holographic anti-tamper sticker with a hatched 'void' pattern."""
    h, w = max(1, int(y1 - y0)), max(1, int(x1 - x0))
    hue = np.linspace(0, 1, w, dtype=np.float32)[None, :] + rng.uniform(0, 1)
    holo = np.stack([0.8 + 0.15 * np.sin(2 * np.pi * (hue + k / 3)) for k in range(3)], -1)
    m = draw.rounded_rect(cv, x0, y0, x1, y1, 1.0, (0.9, 0.9, 0.92))
    yi, xi = int(y0), int(x0)
    sub = cv[yi:yi + h, xi:xi + w, :3]
    a = (m[yi:yi + h, xi:xi + w].astype(np.float32) / 255.0)[..., None]
    sub[:] = sub * (1 - a * 0.6) + np.broadcast_to(holo[:, :sub.shape[1]], sub.shape) * a * 0.6
    for k in range(-h, w, 3):
        draw.line(cv, (x0 + k, y1), (x0 + k + h, y0), (0.6, 0.62, 0.68), 1, alpha=0.35)


def _dirt(cv, mask, area: float, rng) -> DirtSpot | None:
    """One dirt spot (dust, grease or a stain) of about ``area`` px on the plain body ``mask`` (0..255: where dirt
    can lie and be seen as dirt), measured as drawn: its covered area and the mean change it made (the canvas is
    read before and after; no random draw is added, so photos without dirt are not changed by the measuring).

    The spot is clipped to ``mask``: a blot spilling past the body's edge would lie on the shadowed rim or on the
    backdrop, where no one reads it as dirt on the product, and its area counted only what lies on the body.

    The change is taken in the RGB channel it moves most, not in luminance alone: a brown spot on a red body
    or a grey one on a lavender body barely moves luminance, yet a person sees it at once by its colour. The
    sprite has no sensor noise yet, so small colour changes are measured exactly here."""
    ys, xs = np.nonzero(mask > 200)
    if len(xs) == 0:
        return None
    before = cv.copy()
    coverage = np.zeros(mask.shape, np.uint8)
    i = rng.integers(len(xs))
    cx, cy = float(xs[i]), float(ys[i])
    r = max(0.8, np.sqrt(area / np.pi))
    rgb = rng.choice(DIRT_COLOURS)
    alpha = rng.uniform(0.55, 0.9)
    for _ in range(rng.integers(1, 5)):
        ox, oy = rng.normal(0, r * 0.5, 2)
        ax, ay = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.3, 1.0)
        ang = rng.uniform(0, 180)
        np.maximum(coverage, draw.ellipse(cv, cx + ox, cy + oy, ax, ay, ang, rgb, alpha=alpha), out=coverage)
    allowed = mask.astype(np.float32) / 255.0
    cv[..., :3] = before[..., :3] + (cv[..., :3] - before[..., :3]) * allowed[..., None]   # clipped to the body
    cv[..., 3] = before[..., 3]
    cov = coverage.astype(np.float32) / 255.0 * allowed
    if cov.sum() <= 0:
        return None
    # contrast per covered px: sum of the changes / sum of the coverage, so an antialiased edge px, changed half
    # as much at half coverage, counts half
    change = np.abs(cv[..., :3] - before[..., :3]).max(axis=2)
    contrast = float((change * (cov > 0)).sum() / cov.sum())
    yy, xx = np.nonzero(cov > 0)
    box = (float(xx.min()), float(yy.min()), float(xx.max() + 1), float(yy.max() + 1))
    return DirtSpot(box, (cx, cy), float(cov.sum()), contrast)


def _plain_body(mask: np.ndarray, features: list[tuple[float, float, float, float]], inset: float) -> np.ndarray:
    """Where a dirt spot reads as dirt: the body mask eroded by ``inset`` px (the rounded rim, its shading and the
    antialiased edge hide a spot there) less the ``features`` boxes (the camera module, lenses and flash: a dark
    blot among lenses looks like one more lens). Falls back to the whole body for a body too small to erode."""
    k = max(1, int(round(inset)))
    plain = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    for fx0, fy0, fx1, fy1 in features:
        plain[max(0, int(fy0)):max(0, int(np.ceil(fy1))), max(0, int(fx0)):max(0, int(np.ceil(fx1)))] = 0
    return plain if (plain > 200).any() else mask


def render_product(sku: Sku, long_side: int, rng: np.random.Generator, *, stickers_missing: int = 0,
                   dirt_spots: int = 0, style: str = "flat") -> Sprite:
    """Draw ``sku`` with its long side ``long_side`` px; drop ``stickers_missing`` stickers, add dirt. ``style``:
    ``flat`` (drawn colours and a sheen) or ``shaded`` (:func:`_relief` as well: rounded lit edges, glints and the
    room mirrored), from its own random stream so that the photo's other draws do not move."""
    if style not in ("flat", "shaded"):
        raise ValueError(f"unknown product style {style!r}: flat or shaded")
    ptype = sku.product_type
    features: list[tuple[float, float, float, float]] = []   # sprite boxes where dirt is not drawn
    if ptype == "headphones":
        cv, mask = _headphones(sku, long_side, rng)
        x0 = y0 = 3
        w, h = cv.shape[1] - 6, cv.shape[0] - 6
    else:
        cv, x0, y0, w, h, mask = _body_sprite(sku, long_side, rng)
        body = np.array(sku.rgb) / 255.0
        if ptype == "laptop":
            draw.rounded_rect(cv, x0 + 1, y0 + h * 0.95, x0 + w - 1, y0 + h - 1, 1, draw.darker(body, 0.75))
            if sku.family.logo == "corner_wordmark":
                _logo(cv, sku.family.logo, x0 + w * 0.06, y0 + h * 0.12, w * 0.09, body)
            else:
                _logo(cv, sku.family.logo, x0 + w / 2, y0 + h / 2, w * 0.1, body)
        else:
            camera_box = _camera(cv, sku, x0, y0, w, rng, scale=1.0 if ptype == "phone" else 0.6)
            features += [camera_box] if camera_box else []
            logo_size = w * (0.16 if ptype == "phone" else 0.12)
            _logo(cv, sku.family.logo, x0 + w / 2, y0 + h * (0.5 if sku.family.logo != "wordmark" else 0.7),
                  logo_size, body)
        _finish(cv, mask, rng)
    if style == "shaded":                        # seeded by the photo's stream, drawing nothing from it
        _relief(cv, mask, ptype, np.random.default_rng(rng.bit_generator.state["state"]["state"]))
    sprite = Sprite(cv)
    spots = STICKER_SPOTS[ptype]
    sw, sh = STICKER_SIZE[ptype]
    missing = set(rng.choice(len(spots), size=min(stickers_missing, len(spots)), replace=False).tolist()) \
        if spots else set()
    for k, (fx, fy) in enumerate(spots):
        bx0, by0 = x0 + fx * w - sw * w / 2, y0 + fy * h - sh * w / 2
        bx1, by1 = bx0 + sw * w, by0 + sh * w
        sprite.sticker_spots.append((bx0, by0, bx1, by1))
        if k in missing:
            if rng.random() < 0.3:  # glue residue where a sticker was peeled off
                draw.rounded_rect(cv, bx0, by0, bx1, by1, 1.0, (0.7, 0.7, 0.68), alpha=0.12)
            continue
        _sticker(cv, bx0, by0, bx1, by1, rng)
        sprite.boxes.append(("sticker", bx0, by0, bx1, by1))
    body_area = float((mask > 127).sum())
    plain = _plain_body(mask, features, DIRT_INSET * long_side) if dirt_spots else mask
    for _ in range(dirt_spots):
        area = body_area * float(np.exp(rng.uniform(np.log(4.0 / body_area), np.log(0.05))))
        spot = _dirt(cv, plain, area, rng)
        if spot:
            sprite.dirt.append(spot)
    return sprite
