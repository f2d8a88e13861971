"""One listing photo: background, product, stickers, dirt, prohibited item, camera and edits.

``render_photo`` is a pure function of (seed, index, generator params): the same inputs give the
same JPEG bytes and labels, whichever process renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.params import GeneratorParams, LabelParams, VisibilityParams
from pipelines.data.synth import camera
from pipelines.data.synth.backgrounds import make_background
from pipelines.data.synth.catalog import (Sku, catalogue_skus, nearest_catalogue_sku, novel_skus, practice_skus,
                                          swap_kind)
from pipelines.data.synth.manipulation import clone_object_share, coarse_trace, manipulate, pasted, trace
from pipelines.data.synth.products import render_product
from pipelines.data.synth.prohibited_items import render_item


@dataclass(frozen=True)
class SceneConfig:
    size: int
    gen: GeneratorParams
    labels: LabelParams
    categories: tuple[str, ...]


def _homography(rng, w, h, long_side, centre, rot_sd=6.0, persp=0.035) -> np.ndarray:
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    ang = np.radians(np.clip(rng.normal(0, rot_sd), -3 * rot_sd, 3 * rot_sd))
    c, s = np.cos(ang), np.sin(ang)
    pts = (src - [w / 2, h / 2]) @ np.float32([[c, s], [-s, c]])
    pts += rng.normal(0, persp * long_side, pts.shape)
    dst = (pts + centre).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def _project(H, pts) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float32).reshape(-1, 1, 2), H).reshape(-1, 2)


def _area_scale(H, pt) -> float:
    """How much ``H`` scales areas at sprite point ``pt``: |det| of its Jacobian there, det(H) / w^3 with w the
    homogeneous coordinate of the image of ``pt``."""
    w = H[2, 0] * pt[0] + H[2, 1] * pt[1] + H[2, 2]
    return float(abs(np.linalg.det(H) / w ** 3))


def _alpha_outline(rgba) -> np.ndarray:
    contours, _ = cv2.findContours((rgba[..., 3] > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return np.concatenate(contours).reshape(-1, 2).astype(np.float32)


def _box(pts) -> tuple[float, float, float, float]:
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


ITEM_MIN_IN_FRAME = 0.4   # a prohibited item is labelled when at least this share of its box is in the frame


def _box_mask(box, size: int) -> np.ndarray:
    """A box (px, clipped to the frame) as a 0/1 mask of the frame: what :meth:`Pasted.covered` measures a spot by."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((size, size), np.float32)
    mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
    return mask


def _clip(box, size) -> tuple[tuple[float, float, float, float], float]:
    """The box clipped to the frame, and the share of its area that stays inside."""
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(size, x1), min(size, y1)
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    return (cx0, cy0, cx1, cy1), inside / area


def _composite(img, rgba, H, size, shadow_rng=None) -> np.ndarray:
    """Warp an RGBA sprite into the frame and composite it, with a soft drop shadow; returns its alpha in the frame."""
    warped = cv2.warpPerspective(rgba, H, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = warped[..., 3:4]
    if shadow_rng is not None:
        sh = cv2.GaussianBlur(warped[..., 3], (0, 0), shadow_rng.uniform(2.0, 6.0))
        dx, dy = shadow_rng.uniform(-6, 6), shadow_rng.uniform(1, 8)
        sh = cv2.warpAffine(sh, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size))
        img *= 1.0 - shadow_rng.uniform(0.25, 0.5) * sh[..., None]
    img[:] = img * (1 - a) + warped[..., :3] * a
    return a[..., 0]


def spot_visibility(area: float, contrast: float, gain: float, blur_kind: str, blur_px: float,
                    rule: VisibilityParams) -> tuple[float, float]:
    """(margin, contrast seen) of one dirt spot of ``area`` photo px and ``contrast`` as drawn, in a photo of
    lighting ``gain`` blurred by ``camera.blur(.., blur_kind, blur_px)``: the contrast seen is what the gain and
    the blur leave at the centre of a round spot of that area; the spot is visible iff margin >= 1, i.e. iff
    area >= rule.dirt_min_area_px and contrast seen >= rule.dirt_min_contrast."""
    seen = contrast * gain * camera.spot_contrast_kept(blur_kind, blur_px, float(np.sqrt(area / np.pi)))
    margin = min(area / max(rule.dirt_min_area_px, 1e-9), seen / max(rule.dirt_min_contrast, 1e-9))
    return margin, seen


def _pick_sku(rng, gen: GeneratorParams) -> Sku:
    if gen.practice_sku_rate and rng.random() < gen.practice_sku_rate:   # no draw at rate 0: photos stay as they were
        pool = practice_skus()
        return pool[rng.integers(len(pool))]
    pool = novel_skus() if rng.random() < gen.new_sku_rate else catalogue_skus()
    return pool[rng.integers(len(pool))]


def _claimed(rng, sku: Sku, gen: GeneratorParams) -> str:
    """The SKU the listing claims. A new product (outside the catalogue) is listed under the catalogue SKU
    that looks most like it; a wrong pick is a colour twin, a layout twin (same type and colour, another
    family) or any other catalogue SKU, in equal parts where the twins exist."""
    if sku.novel:
        return nearest_catalogue_sku(sku).sku_id
    if sku.practice:        # training material: its own name
        return sku.sku_id
    if rng.random() >= gen.claimed_sku_error_rate:
        return sku.sku_id
    pool = [s for s in catalogue_skus() if s.sku_id != sku.sku_id]
    colour = [s for s in pool if swap_kind(sku.sku_id, s.sku_id) == "colour"]
    layout = [s for s in pool if swap_kind(sku.sku_id, s.sku_id) == "layout"]
    kinds = [k for k in (colour, layout) if k] + [pool]
    others = kinds[int(rng.integers(len(kinds)))]
    return others[rng.integers(len(others))].sku_id


def _product_centre(rng, size, tol, off_centre) -> np.ndarray:
    if not off_centre:
        return size / 2 + np.clip(rng.normal(0, 0.025, 2), -0.6 * tol, 0.6 * tol) * size
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    return size / 2 + direction * rng.uniform(1.6 * tol, 0.45) * size


def render_photo(seed: int, index: int, cfg: SceneConfig) -> tuple[bytes, dict]:
    rng = np.random.default_rng([seed, index])
    gen, size = cfg.gen, cfg.size
    has_prohibited = bool(cfg.categories) and rng.random() < gen.prohibited_rate
    has_product = not (has_prohibited and rng.random() < gen.prohibited_alone_rate)
    sku = _pick_sku(rng, gen) if has_product else None
    category = sku.product_type if sku else "none"
    sticker_expected = 0
    img, background = make_background(rng, size)
    objects = np.zeros((size, size), np.float32)   # the product's and items' alpha in the frame (clone visibility)
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    rec: dict = {"category": category, "sku_id": sku.sku_id if sku else "none",
                 "claimed_sku": _claimed(rng, sku, gen) if sku else "none", "new_sku": bool(sku and sku.novel),
                 "background": background, "lighting": gen.lighting}
    stickers_present = 0
    # dirt spots in the frame: (index of the box in ``boxes``, area in photo px, contrast as drawn), judged
    # visible or not once the camera's lighting and blur are known
    dirt_in_frame: list[tuple[int, float, float]] = []
    center = (0.0, 0.0)
    cut = off = False
    product_box = None
    if sku:
        required = category in cfg.labels.sticker_required_categories
        missing_wanted = required and rng.random() < gen.sticker_missing_rate
        dirt_spots = int(rng.integers(1, 4)) if rng.random() < gen.dirt_rate else 0
        off_wanted = rng.random() < gen.off_centre_rate
        long_side = size * rng.uniform(0.45, 0.62) * (0.85 if has_prohibited else 1.0)
        sprite = render_product(sku, int(long_side), rng, stickers_missing=int(rng.integers(1, 3)) if missing_wanted else 0,
                                dirt_spots=dirt_spots, style=gen.product_style)
        h, w = sprite.rgba.shape[:2]
        H = _homography(rng, w, h, long_side, _product_centre(rng, size, cfg.labels.centering_tolerance, off_wanted))
        objects = np.maximum(objects, _composite(img, sprite.rgba, H, size, shadow_rng=rng))
        full = _box(_project(H, _alpha_outline(sprite.rgba)))
        product_box, share = _clip(full, size)
        cut = share < 0.985
        boxes.append(("product", product_box))
        for spot in sprite.sticker_spots:  # a sticker spot counts only where the frame shows it
            _, vis = _clip(_box(_project(H, [spot[:2], (spot[2], spot[1]), spot[2:], (spot[0], spot[3])])), size)
            sticker_expected += int(required and vis >= 0.5)
        for label, x0, y0, x1, y1 in sprite.boxes:
            b, vis = _clip(_box(_project(H, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])), size)
            if vis < 0.5:
                continue
            boxes.append((label, b))
            stickers_present += int(label == "sticker" and required)
        for spot in sprite.dirt:
            x0, y0, x1, y1 = spot.box
            b, vis = _clip(_box(_project(H, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])), size)
            if vis < 0.5:
                continue
            dirt_in_frame.append((len(boxes), spot.area * _area_scale(H, spot.centre), spot.contrast))
            boxes.append(("dirt", b))
        bx0, by0, bx1, by1 = product_box
        center = ((bx0 + bx1) / 2 / size - 0.5, (by0 + by1) / 2 / size - 0.5)
        off = cut or max(abs(center[0]), abs(center[1])) > cfg.labels.centering_tolerance
    prohibited: list[str] = []
    item_alpha = None
    if has_prohibited:
        cat = cfg.categories[rng.integers(len(cfg.categories))]
        item_side = size * (rng.uniform(0.4, 0.65) if not sku else rng.uniform(0.26, 0.38))
        item = render_item(cat, int(item_side), rng)
        h, w = item.shape[:2]
        if sku:  # beside the product: the free side of the frame
            px = (product_box[0] + product_box[2]) / 2
            centre = np.array([size * (0.8 if px < size / 2 else 0.2), size * rng.uniform(0.25, 0.75)])
        else:
            centre = size / 2 + rng.normal(0, 0.06, 2) * size
        Hi = _homography(rng, w, h, item_side, centre, rot_sd=25.0, persp=0.02)
        item_alpha = _composite(img, item, Hi, size, shadow_rng=rng)
        objects = np.maximum(objects, item_alpha)
        b, vis = _clip(_box(_project(Hi, _alpha_outline(item))), size)
        if vis >= ITEM_MIN_IN_FRAME:
            prohibited.append(cat)
            boxes.append((f"prohibited:{cat}", b))

    img, gain = camera.light(img, rng, gen.lighting, gen.white_balance_sd)
    blurred_wanted = rng.random() < gen.blur_rate
    kind, strength = camera.sample_blur(rng) if blurred_wanted else ("none", 0.0)
    img = camera.blur(img, rng, kind, strength * size / 256)
    img = camera.sensor_noise(img, rng, gain, gen.camera_noise)
    u8 = (img * 255 + 0.5).astype(np.uint8)
    manipulation, edit_trace, object_share, coarse, cover = "none", 0.0, 0.0, 0.0, None
    if rng.random() < gen.manipulation_rate:
        before = u8.copy()
        manipulation, done = manipulate(u8, rng)
        cover = pasted(done)
        edit_trace = trace(before, u8)
        if manipulation == "clone":
            object_share, coarse = clone_object_share(objects, done.squares), coarse_trace(before, u8)
    quality = int(rng.integers(gen.jpeg_quality[0], gen.jpeg_quality[1] + 1))
    jpeg = camera.to_jpeg(u8, quality)

    votes = camera.annotate(rng, kind, strength)
    score = sum(votes) / 6.0

    # Labels people could give (params.yaml labels.visibility): a dirt spot counts when it is large enough and
    # its contrast, after the lighting gain and the blur, is high enough (spot_visibility); an edit counts when its
    # trace is above what swapping the sensor noise leaves. What falls below stays drawn, unlabelled, and is
    # recorded in the dirt_* and manipulation_* columns.
    # An item or a spot mostly under content an edit pasted over it (a splice's photo, a clone's patch) is not seen
    # either: a person sees the edit, not what is under it.
    rule = cfg.labels.visibility
    spots = []  # (margin, box index, area, contrast after lighting and blur); visible iff margin >= 1
    for k, area, contrast in dirt_in_frame:
        margin, seen = spot_visibility(area, contrast, gain, kind, strength * size / 256, rule)
        if cover is not None and cover.covered(_box_mask(boxes[k][1], size)) > rule.max_covered:
            margin = 0.0
        spots.append((margin, k, area, seen))
    hidden = {k for margin, k, _, _ in spots if margin < 1.0}
    item_covered = cover.covered(item_alpha) if cover is not None and item_alpha is not None else 0.0
    prohibited_drawn = list(prohibited)
    if item_covered > rule.max_covered:
        hidden |= {k for k, (label, _) in enumerate(boxes) if label.startswith("prohibited:")}
        prohibited = []
    boxes = [b for k, b in enumerate(boxes) if k not in hidden]
    _, _, top_area, top_contrast = max(spots) if spots else (0.0, -1, 0.0, 0.0)  # the most visible spot
    manipulated = manipulation != "none" and edit_trace >= rule.manipulation_min_trace and \
        (manipulation != "clone" or object_share >= rule.clone_min_object_share or coarse >= rule.clone_min_coarse_trace)
    rec.update({
        "width": size, "height": size,
        "blur_kind": kind, "blur_strength": float(strength), "blur_votes": votes, "blur_score": score,
        "blur_dropped": 0 in votes and 2 in votes, "blurred": score >= cfg.labels.blur_threshold,
        "stickers_expected": sticker_expected, "stickers_present": min(stickers_present, sticker_expected),
        "sticker_missing": stickers_present < sticker_expected, "dirt": len(spots) > len(hidden),
        "dirt_spots_drawn": len(spots), "dirt_spots_visible": len(spots) - len(hidden),
        "dirt_max_contrast": float(top_contrast), "dirt_max_area_px": float(top_area),
        "center_dx": float(center[0]), "center_dy": float(center[1]), "cut_by_frame": bool(cut), "off_centre": bool(off),
        "prohibited": prohibited, "prohibited_drawn": prohibited_drawn, "item_covered": float(item_covered),
        "manipulated": manipulated,
        "manipulation_type": manipulation if manipulated else "none", "manipulation_drawn": manipulation,
        "manipulation_trace": float(edit_trace), "clone_object_share": float(object_share),
        "clone_coarse_trace": float(coarse),
        "boxes": [{"label": lab, "x0": b[0] / size, "y0": b[1] / size, "x1": b[2] / size, "y1": b[3] / size}
                  for lab, b in boxes],
    })
    return jpeg, rec
