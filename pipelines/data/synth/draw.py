"""Small drawing primitives on float32 RGBA canvases (antialiased, in place)."""

from __future__ import annotations

import cv2
import numpy as np

SHIFT = 4  # sub-pixel bits for cv2 drawing
_S = float(1 << SHIFT)


def canvas(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w, 4), np.float32)


def _pts(points) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * _S).astype(np.int32).reshape(-1, 1, 2)


def _paint(cv: np.ndarray, mask: np.ndarray, rgb, alpha: float = 1.0) -> None:
    """Alpha-composite a solid colour through an 8-bit coverage mask onto an RGBA canvas."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    a = (mask[y:y + h, x:x + w].astype(np.float32) * (alpha / 255.0))
    sub = cv[y:y + h, x:x + w]
    a3 = a[..., None]
    sub[..., :3] = sub[..., :3] * (1 - a3) + np.asarray(rgb, np.float32) * a3
    sub[..., 3] = sub[..., 3] + a * (1 - sub[..., 3])


def poly(cv, points, rgb, alpha=1.0) -> np.ndarray:
    m = np.zeros(cv.shape[:2], np.uint8)
    cv2.fillPoly(m, [_pts(points)], 255, cv2.LINE_AA, SHIFT)
    _paint(cv, m, rgb, alpha)
    return m


def rounded_rect_points(x0, y0, x1, y1, r, n=6) -> np.ndarray:
    r = max(0.0, min(r, (x1 - x0) / 2, (y1 - y0) / 2))
    pts = []
    for cx, cy, a0 in ((x1 - r, y0 + r, -90), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90), (x0 + r, y0 + r, 180)):
        for t in np.linspace(a0, a0 + 90, n):
            pts.append((cx + r * np.cos(np.radians(t)), cy + r * np.sin(np.radians(t))))
    return np.array(pts)


def rounded_rect(cv, x0, y0, x1, y1, r, rgb, alpha=1.0) -> np.ndarray:
    return poly(cv, rounded_rect_points(x0, y0, x1, y1, r), rgb, alpha)


def circle(cv, cx, cy, r, rgb, alpha=1.0) -> np.ndarray:
    m = np.zeros(cv.shape[:2], np.uint8)
    cv2.circle(m, (int(round(cx * _S)), int(round(cy * _S))), max(1, int(round(r * _S))), 255, -1,
               cv2.LINE_AA, SHIFT)
    _paint(cv, m, rgb, alpha)
    return m


def ellipse(cv, cx, cy, ax, ay, angle, rgb, alpha=1.0, thickness=-1, start=0, end=360) -> np.ndarray:
    m = np.zeros(cv.shape[:2], np.uint8)
    t = -1 if thickness < 0 else max(1, int(round(thickness)))
    cv2.ellipse(m, (int(round(cx * _S)), int(round(cy * _S))),
                (max(1, int(round(ax * _S))), max(1, int(round(ay * _S)))), angle, start, end, 255, t,
                cv2.LINE_AA, SHIFT)
    _paint(cv, m, rgb, alpha)
    return m


def line(cv, p0, p1, rgb, thickness=1.0, alpha=1.0) -> np.ndarray:
    m = np.zeros(cv.shape[:2], np.uint8)
    cv2.line(m, (int(round(p0[0] * _S)), int(round(p0[1] * _S))), (int(round(p1[0] * _S)), int(round(p1[1] * _S))),
             255, max(1, int(round(thickness))), cv2.LINE_AA, SHIFT)
    _paint(cv, m, rgb, alpha)
    return m


def text(cv, s, x, y, height, rgb, alpha=1.0, thickness=1, font=cv2.FONT_HERSHEY_SIMPLEX) -> np.ndarray:
    m = np.zeros(cv.shape[:2], np.uint8)
    scale = max(0.1, height / 22.0)
    cv2.putText(m, s, (int(x), int(y)), font, scale, 255, max(1, int(thickness)), cv2.LINE_AA)
    _paint(cv, m, rgb, alpha)
    return m


def shade(cv, mask: np.ndarray, top: float, bottom: float, axis: int = 0) -> None:
    """Multiply the colour under ``mask`` by a linear ramp from ``top`` to ``bottom``."""
    n = cv.shape[axis]
    ramp = np.linspace(top, bottom, n, dtype=np.float32)
    ramp = ramp[:, None] if axis == 0 else ramp[None, :]
    a = mask.astype(np.float32)[..., None] / 255.0
    cv[..., :3] *= 1 + (ramp[..., None] - 1) * a


def darker(rgb, f: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(c * f, 0, 1)) for c in rgb)


def contrast_of(rgb, amount: float = 0.18) -> tuple[float, float, float]:
    """A tone of ``rgb`` that stands out a little: lighter on dark bodies, darker on light ones."""
    lum = 0.3 * rgb[0] + 0.59 * rgb[1] + 0.11 * rgb[2]
    return tuple(float(np.clip(c + amount if lum < 0.45 else c - amount, 0, 1)) for c in rgb)
