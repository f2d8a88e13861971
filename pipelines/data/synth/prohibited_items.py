"""Prohibited items drawn procedurally, one recognisable object per category.

Each renderer takes the long side in px and a random stream and returns an RGBA canvas whose
alpha is the object; the scene places it alone or beside a product and records its box.
Adding a category means adding a renderer here and its name to params.yaml.
"""

from __future__ import annotations

import numpy as np

from pipelines.data.synth import draw

METAL = (0.72, 0.74, 0.78)
DARK_METAL = (0.16, 0.17, 0.19)


def cash(L, rng):
    w, h = L, L * 0.46
    cv = draw.canvas(int(h * 1.6) + 6, int(w) + 6)
    base = np.array(rng.choice([(0.55, 0.7, 0.5), (0.5, 0.6, 0.78), (0.85, 0.6, 0.62), (0.9, 0.72, 0.45)]))
    value = str(rng.choice(["100", "50", "20", "500"]))
    for k in range(rng.integers(1, 4)):  # a fanned stack of notes
        oy = 3 + k * h * 0.22
        tone = base * rng.uniform(0.92, 1.05)
        draw.rounded_rect(cv, 3, oy, 3 + w, oy + h, 2, draw.darker(tone, 0.75))
        draw.rounded_rect(cv, 5, oy + 2, 1 + w, oy + h - 2, 2, tuple(tone))
        draw.rounded_rect(cv, 3 + w * 0.05, oy + h * 0.12, 3 + w * 0.95, oy + h * 0.88, 2, draw.darker(tone, 0.85),
                          alpha=0.5)
        draw.ellipse(cv, 3 + w * 0.7, oy + h * 0.5, w * 0.12, h * 0.33, 0, draw.darker(tone, 0.6))
        draw.ellipse(cv, 3 + w * 0.7, oy + h * 0.45, w * 0.05, h * 0.12, 0, draw.darker(tone, 1.15))
        draw.text(cv, value, 3 + w * 0.08, oy + h * 0.4, h * 0.35, draw.darker(tone, 0.45), thickness=1)
        draw.text(cv, value, 3 + w * 0.3, oy + h * 0.85, h * 0.3, draw.darker(tone, 0.5), thickness=1)
    return cv


def knife(L, rng):
    w, h = L, L * 0.18
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    blade_end = w * rng.uniform(0.55, 0.65)
    draw.poly(cv, [(3 + w * 0.02, 3 + h * 0.5), (3 + blade_end, 3 + h * 0.15), (3 + blade_end, 3 + h * 0.9),
                   (3 + w * 0.15, 3 + h * 0.75)], METAL)
    draw.line(cv, (3 + w * 0.05, 3 + h * 0.52), (3 + blade_end, 3 + h * 0.2), (0.95, 0.96, 0.98), 1)
    handle = tuple(rng.choice([(0.12, 0.1, 0.08), (0.4, 0.24, 0.12), (0.1, 0.1, 0.1), (0.6, 0.1, 0.1)]))
    draw.rounded_rect(cv, 3 + blade_end, 3 + h * 0.12, 3 + w, 3 + h * 0.95, h * 0.3, handle)
    for fx in (0.72, 0.85):
        draw.circle(cv, 3 + w * fx, 3 + h * 0.52, max(1.0, h * 0.08), METAL)
    return cv


def gun(L, rng):
    w, h = L, L * 0.68
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    col = tuple(rng.choice([DARK_METAL, (0.3, 0.3, 0.3), (0.35, 0.3, 0.22)]))
    draw.rounded_rect(cv, 3, 3 + h * 0.05, 3 + w, 3 + h * 0.32, 2, col)  # slide
    for k in range(6):
        draw.line(cv, (3 + w * (0.75 + k * 0.035), 3 + h * 0.08), (3 + w * (0.75 + k * 0.035), 3 + h * 0.28),
                  draw.darker(col, 0.5), 1)
    draw.poly(cv, [(3 + w * 0.62, 3 + h * 0.3), (3 + w * 0.93, 3 + h * 0.3), (3 + w * 0.86, 3 + h * 0.98),
                   (3 + w * 0.6, 3 + h * 0.98)], draw.darker(col, 0.85))  # grip
    draw.ellipse(cv, 3 + w * 0.5, 3 + h * 0.42, w * 0.1, h * 0.14, 0, col, thickness=max(1, h * 0.05))  # guard
    draw.line(cv, (3 + w * 0.52, 3 + h * 0.32), (3 + w * 0.5, 3 + h * 0.45), (0.05, 0.05, 0.05), max(1, h * 0.03))
    draw.circle(cv, 3 + w * 0.02, 3 + h * 0.15, max(1, h * 0.04), (0.02, 0.02, 0.02))
    return cv


def cigarettes(L, rng):
    w, h = L * 0.62, L
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    pack = tuple(rng.choice([(0.78, 0.1, 0.12), (0.95, 0.95, 0.95), (0.15, 0.2, 0.45), (0.85, 0.75, 0.3)]))
    n = int(rng.integers(3, 6))
    for k in range(n):  # cigarettes sticking out
        x = 3 + w * (0.15 + 0.7 * k / max(1, n - 1)) - w * 0.07
        top = 3 + h * rng.uniform(0.0, 0.18)
        draw.rounded_rect(cv, x, top, x + w * 0.14, 3 + h * 0.4, 2, (0.96, 0.95, 0.92))
        draw.rounded_rect(cv, x, top, x + w * 0.14, top + h * 0.09, 2, (0.86, 0.55, 0.25))
    draw.rounded_rect(cv, 3, 3 + h * 0.3, 3 + w, 3 + h, 3, pack)
    draw.rounded_rect(cv, 3 + w * 0.1, 3 + h * 0.55, 3 + w * 0.9, 3 + h * 0.8, 2, draw.contrast_of(pack, 0.35))
    draw.text(cv, "SMOKE", 3 + w * 0.12, 3 + h * 0.72, h * 0.11, pack)
    return cv


def lighter(L, rng):
    w, h = L * 0.42, L
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    body = tuple(rng.uniform(0.1, 0.95, 3))
    draw.rounded_rect(cv, 3, 3 + h * 0.22, 3 + w, 3 + h, w * 0.2, body)
    draw.rounded_rect(cv, 3 + w * 0.05, 3 + h * 0.05, 3 + w * 0.95, 3 + h * 0.25, 2, METAL)
    draw.circle(cv, 3 + w * 0.3, 3 + h * 0.12, w * 0.13, DARK_METAL)
    draw.rounded_rect(cv, 3 + w * 0.55, 3 + h * 0.02, 3 + w * 0.85, 3 + h * 0.2, 1, (0.3, 0.3, 0.32))
    if rng.random() < 0.4:
        draw.ellipse(cv, 3 + w * 0.5, 3 + h * 0.06, w * 0.1, h * 0.05, 0, (1.0, 0.7, 0.2), alpha=0.8)
    return cv


def pills(L, rng):
    w, h = L, L * 0.6
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    pill = tuple(rng.choice([(0.97, 0.97, 0.95), (0.95, 0.85, 0.4), (0.9, 0.5, 0.5), (0.55, 0.7, 0.9)]))
    if rng.random() < 0.6:  # blister pack
        draw.rounded_rect(cv, 3, 3, 3 + w, 3 + h, 3, (0.78, 0.8, 0.83))
        for i in range(5):
            for j in range(2):
                cx, cy = 3 + w * (0.12 + 0.19 * i), 3 + h * (0.28 + 0.44 * j)
                draw.circle(cv, cx, cy, h * 0.17, (0.9, 0.92, 0.95), alpha=0.7)
                draw.ellipse(cv, cx, cy, h * 0.13, h * 0.13 * rng.uniform(0.6, 1.0), 0, pill)
    else:  # loose capsules
        other = draw.contrast_of(pill, 0.4)
        for _ in range(int(rng.integers(4, 9))):
            cx, cy = 3 + rng.uniform(0.15, 0.85) * w, 3 + rng.uniform(0.2, 0.8) * h
            ang = rng.uniform(0, 180)
            draw.ellipse(cv, cx, cy, h * 0.18, h * 0.08, ang, pill)
            draw.ellipse(cv, cx, cy, h * 0.18, h * 0.08, ang, other, start=0, end=180)
    return cv


def syringe(L, rng):
    w, h = L, L * 0.16
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    draw.rounded_rect(cv, 3 + w * 0.22, 3 + h * 0.15, 3 + w * 0.78, 3 + h * 0.85, 2, (0.92, 0.95, 0.97), alpha=0.85)
    liquid = tuple(rng.choice([(0.75, 0.85, 0.95), (0.95, 0.8, 0.3), (0.9, 0.9, 0.9)]))
    draw.rounded_rect(cv, 3 + w * 0.5, 3 + h * 0.25, 3 + w * 0.77, 3 + h * 0.75, 1, liquid, alpha=0.8)
    for k in range(8):
        x = 3 + w * (0.3 + k * 0.06)
        draw.line(cv, (x, 3 + h * 0.15), (x, 3 + h * 0.4), (0.2, 0.2, 0.25), 1)
    draw.rounded_rect(cv, 3, 3 + h * 0.38, 3 + w * 0.24, 3 + h * 0.62, 1, (0.85, 0.85, 0.88))  # plunger rod
    draw.rounded_rect(cv, 3, 3, 3 + w * 0.03, 3 + h, 1, (0.3, 0.3, 0.35))  # thumb rest
    draw.line(cv, (3 + w * 0.78, 3 + h * 0.5), (3 + w, 3 + h * 0.5), METAL, max(1, h * 0.06))  # needle
    return cv


def ammunition(L, rng):
    w, h = L, L * 0.55
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    n = int(rng.integers(3, 7))
    bw = w / n
    for k in range(n):
        x = 3 + k * bw
        draw.rounded_rect(cv, x + bw * 0.12, 3 + h * 0.35, x + bw * 0.88, 3 + h, 1, (0.8, 0.62, 0.25))  # brass
        draw.ellipse(cv, x + bw * 0.5, 3 + h * 0.37, bw * 0.37, h * 0.34, 0, (0.72, 0.42, 0.25), start=180, end=360)
        draw.line(cv, (x + bw * 0.3, 3 + h * 0.45), (x + bw * 0.3, 3 + h * 0.95), (0.95, 0.85, 0.55), 1, 0.7)
    return cv


def alcohol(L, rng):
    w, h = L * 0.34, L
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    glass = tuple(rng.choice([(0.1, 0.35, 0.15), (0.4, 0.22, 0.08), (0.8, 0.85, 0.85), (0.15, 0.15, 0.2)]))
    draw.rounded_rect(cv, 3 + w * 0.36, 3, 3 + w * 0.64, 3 + h * 0.35, 2, glass, alpha=0.92)  # neck
    draw.rounded_rect(cv, 3 + w * 0.34, 3, 3 + w * 0.66, 3 + h * 0.06, 1, (0.8, 0.7, 0.3))  # cap
    draw.rounded_rect(cv, 3, 3 + h * 0.3, 3 + w, 3 + h, w * 0.2, glass, alpha=0.92)  # body
    label = tuple(rng.choice([(0.95, 0.92, 0.8), (0.1, 0.1, 0.1), (0.85, 0.1, 0.1)]))
    draw.rounded_rect(cv, 3 + w * 0.06, 3 + h * 0.5, 3 + w * 0.94, 3 + h * 0.8, 1, label)
    draw.text(cv, "XO", 3 + w * 0.2, 3 + h * 0.7, h * 0.1, draw.contrast_of(label, 0.6))
    draw.line(cv, (3 + w * 0.2, 3 + h * 0.35), (3 + w * 0.2, 3 + h * 0.95), (1, 1, 1), 1, alpha=0.5)
    return cv


def handcuffs(L, rng):
    w, h = L, L * 0.5
    cv = draw.canvas(int(h) + 6, int(w) + 6)
    r = h * 0.42
    t = max(2, r * 0.22)
    for cx in (3 + r + 1, 3 + w - r - 1):
        draw.ellipse(cv, cx, 3 + h * 0.5, r, r, 0, METAL, thickness=t)
        draw.ellipse(cv, cx, 3 + h * 0.5, r * 0.8, r * 0.8, 0, (0.45, 0.47, 0.5), thickness=1, alpha=0.6)
    for k in range(3):  # chain links
        cx = 3 + w * (0.42 + 0.08 * k)
        draw.ellipse(cv, cx, 3 + h * 0.5, w * 0.045, h * 0.08, 0, METAL, thickness=max(1, t * 0.5))
    return cv


RENDERERS = {"cash": cash, "knife": knife, "gun": gun, "cigarettes": cigarettes, "lighter": lighter,
             "pills": pills, "syringe": syringe, "ammunition": ammunition, "alcohol": alcohol,
             "handcuffs": handcuffs}


def render_item(category: str, long_side: int, rng: np.random.Generator) -> np.ndarray:
    try:
        renderer = RENDERERS[category]
    except KeyError:
        raise ValueError(f"no renderer for prohibited category {category!r}; known: {sorted(RENDERERS)}") from None
    return renderer(float(long_side), rng)
