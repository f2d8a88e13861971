"""The SKU catalogue: product types, families and colours, including hard negatives.

A SKU is a body shape and aspect, a colour, a camera-module layout and a logo. Families that come
in several colours give SKUs that differ only in colour ("nova-11-red" beside "nova-11-green");
``nova-12`` and ``nova-12-pro`` share body and colours and differ only in the camera layout.
SKUs marked ``novel`` are outside the default catalogue: they only appear when the generator is
shifted with ``new_sku_rate`` (new products arriving on the marketplace).

Practice SKUs (:func:`practice_skus`) are neither: products no marketplace lists, made of the catalogue's own parts
(body, camera layout, logo, colour) in combinations no catalogue or new family has, drawn only with the generator's
``practice_sku_rate``. The SKU embedding may train on them (``train.sku.extra_photos``), as a real matcher trains on
a product corpus wider than its catalogue, so that it learns which parts tell products apart. No part that only a new
product has (its camera layout, its colours) is ever in a practice SKU, so the new products stay unseen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PRODUCT_TYPES = ("phone", "tablet", "laptop", "headphones")

COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (186, 22, 38), "green": (160, 200, 170), "black": (32, 33, 36), "white": (236, 234, 228),
    "purple": (200, 186, 222), "yellow": (245, 222, 120), "blue": (60, 96, 150), "gold": (226, 200, 160),
    "sage": (170, 182, 150), "violet": (120, 96, 160), "silver": (200, 202, 206), "pink": (238, 196, 200),
    "grey": (120, 124, 128), "space-grey": (92, 94, 98), "midnight": (38, 46, 62), "graphite": (64, 64, 68),
    "beige": (214, 200, 176), "sky-blue": (160, 196, 226), "teal": (40, 130, 140), "orange": (232, 120, 50),
}


@dataclass(frozen=True)
class Family:
    name: str
    product_type: str
    aspect: float          # body width / height
    corner: float          # corner radius, fraction of the body's short side
    camera: str            # camera-module layout (see products.CAMERA_LAYOUTS)
    logo: str              # logo kind (see products.LOGOS)
    colours: tuple[str, ...]
    novel: bool = False
    practice: bool = False  # a training-only product (practice_skus): in no catalogue, never listed


@dataclass(frozen=True)
class Sku:
    sku_id: str
    family: Family
    colour: str

    @property
    def product_type(self) -> str:
        return self.family.product_type

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def novel(self) -> bool:
        return self.family.novel

    @property
    def practice(self) -> bool:
        return self.family.practice


FAMILIES: tuple[Family, ...] = (
    # phones: colour-only twins (nova-11) and camera-only twins (nova-12 vs nova-12-pro)
    Family("nova-11", "phone", 0.49, 0.16, "dual_diagonal", "bitten", ("red", "green", "black", "white", "purple", "yellow")),
    Family("nova-12", "phone", 0.48, 0.15, "dual_vertical", "bitten", ("blue", "black", "white", "red")),
    Family("nova-12-pro", "phone", 0.48, 0.15, "triple_square", "bitten", ("blue", "black", "white", "gold")),
    Family("pixelon-7", "phone", 0.47, 0.12, "bar", "g", ("black", "white", "sage")),
    Family("galaxo-s21", "phone", 0.47, 0.10, "triple_left", "wordmark", ("black", "violet", "silver", "pink")),
    Family("galaxo-a5", "phone", 0.46, 0.12, "quad_left", "wordmark", ("black", "blue", "white")),
    Family("moto-g", "phone", 0.47, 0.14, "round_centre", "batwing", ("blue", "grey")),
    Family("fairphone-4", "phone", 0.50, 0.08, "single_left", "stripe", ("green", "grey")),
    # tablets
    Family("slate-pro", "tablet", 0.72, 0.07, "triple_square", "bitten", ("silver", "space-grey", "gold")),
    Family("slate-air", "tablet", 0.70, 0.07, "single_left", "bitten", ("blue", "pink", "silver", "green")),
    Family("tabby-s8", "tablet", 0.66, 0.05, "dual_vertical", "wordmark", ("graphite", "beige", "silver")),
    # laptops, lid view
    Family("book-air", "laptop", 1.45, 0.05, "none", "bitten_centre", ("silver", "gold", "space-grey", "midnight")),
    Family("book-pro", "laptop", 1.42, 0.04, "none", "bitten_centre", ("silver", "space-grey")),
    Family("thinkbox-x1", "laptop", 1.50, 0.02, "none", "corner_wordmark", ("black",)),
    Family("thinkbox-yoga", "laptop", 1.50, 0.03, "none", "corner_wordmark", ("grey",)),
    Family("zenlap", "laptop", 1.52, 0.03, "none", "rings", ("blue", "silver")),
    # headphones
    Family("aurora-max", "headphones", 0.88, 0.5, "none", "cup_plain", ("silver", "sky-blue", "pink", "green", "space-grey")),
    Family("beatbox-solo", "headphones", 0.92, 0.5, "none", "cup_b", ("red", "black", "white")),
    Family("sonance-xm", "headphones", 0.86, 0.5, "none", "cup_wordmark", ("black", "silver", "blue")),
    # novel SKUs: only with the new_sku_rate shift
    Family("nova-13", "phone", 0.48, 0.17, "triple_diagonal", "bitten", ("teal", "orange", "black"), novel=True),
    Family("slate-mini", "tablet", 0.68, 0.08, "dual_vertical", "bitten", ("purple", "orange"), novel=True),
    Family("aurora-lite", "headphones", 0.90, 0.5, "none", "cup_b", ("teal", "yellow"), novel=True),
    Family("zenlap-duo", "laptop", 1.40, 0.03, "none", "corner_wordmark", ("teal",), novel=True),
)


@lru_cache(maxsize=1)
def all_skus() -> tuple[Sku, ...]:
    return tuple(Sku(f"{f.name}-{c}", f, c) for f in FAMILIES for c in f.colours)


@lru_cache(maxsize=1)
def sku_index() -> dict[str, Sku]:
    return {s.sku_id: s for s in all_skus()}


def sku_ids(*, include_novel: bool = True) -> list[str]:
    return [s.sku_id for s in all_skus() if include_novel or not s.novel]


def catalogue_skus() -> list[Sku]:
    """The default catalogue (novel SKUs excluded)."""
    return [s for s in all_skus() if not s.novel]


def novel_skus() -> list[Sku]:
    return [s for s in all_skus() if s.novel]


# the parts a practice family is made of, per product type: (aspect range, corner range, camera layouts, logos).
# Laptops (lid view) and headphones show no camera.
_PARTS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[str, ...], tuple[str, ...]]] = {
    "phone": ((0.45, 0.51), (0.08, 0.17), ("none", "single_left", "dual_vertical", "dual_diagonal", "triple_square",
              "triple_left", "quad_left", "bar", "round_centre"), ("bitten", "g", "wordmark", "batwing", "stripe", "rings")),
    "tablet": ((0.64, 0.74), (0.04, 0.09), ("none", "single_left", "dual_vertical", "dual_diagonal", "triple_square",
               "triple_left", "quad_left", "bar", "round_centre"), ("bitten", "g", "wordmark", "batwing", "stripe", "rings")),
    "laptop": ((1.38, 1.54), (0.02, 0.05), ("none",), ("bitten_centre", "corner_wordmark", "rings", "g", "wordmark",
                                                       "batwing", "stripe")),
    "headphones": ((0.85, 0.93), (0.5, 0.5), ("none",), ("cup_plain", "cup_b", "cup_wordmark", "g", "batwing", "rings",
                                                        "stripe", "bitten")),
}
PRACTICE_COLOURS_PER_FAMILY = 2


def _look(f: Family) -> tuple[str, str, str]:
    """What tells two families of one product type apart by their parts (laptops and headphones show no camera)."""
    return (f.product_type, f.camera if f.product_type in ("phone", "tablet") else "none", f.logo)


@lru_cache(maxsize=1)
def practice_families() -> tuple[Family, ...]:
    """Every combination of product type, camera layout and logo that no catalogue or new family has, each with
    its own body (aspect, corners) and ``PRACTICE_COLOURS_PER_FAMILY`` colours, all drawn from a fixed stream
    (the same families on every machine). Parts only new products have are left out: a camera layout or a colour
    no catalogue family has is never shown in training."""
    catalogue_parts = [f for f in FAMILIES if not f.novel]
    taken = {_look(f) for f in FAMILIES}
    cameras = {f.camera for f in catalogue_parts} | {"none"}
    colours = sorted({c for f in catalogue_parts for c in f.colours})
    rng = np.random.default_rng(20261206)
    out = []
    for ptype, (aspect, corner, layouts, logos) in _PARTS.items():
        for camera in layouts:
            for logo in logos:
                fam = Family(f"practice-{len(out):03d}", ptype, 0.0, 0.0, camera, logo, (), practice=True)
                if _look(fam) in taken or camera not in cameras:
                    continue
                picked = rng.choice(len(colours), size=PRACTICE_COLOURS_PER_FAMILY, replace=False)
                out.append(Family(fam.name, ptype, round(float(rng.uniform(*aspect)), 3),
                                  round(float(rng.uniform(*corner)), 3), camera, logo,
                                  tuple(colours[i] for i in sorted(picked)), practice=True))
    return tuple(out)


@lru_cache(maxsize=1)
def practice_skus() -> tuple[Sku, ...]:
    """The practice families' SKUs (:func:`practice_families`): training material only, in no catalogue."""
    return tuple(Sku(f"{f.name}-{c}", f, c) for f in practice_families() for c in f.colours)


def swap_kind(shown: str, claimed: str) -> str:
    """How a wrong claim relates to the SKU shown: ``colour`` (same family, another colour), ``layout`` (same
    product type and colour, another family: a camera, logo or shape twin) or ``other``."""
    a, b = sku_index()[shown], sku_index()[claimed]
    if a.family.name == b.family.name:
        return "colour"
    if a.product_type == b.product_type and a.colour == b.colour:
        return "layout"
    return "other"


def nearest_catalogue_sku(sku: Sku) -> Sku:
    """The catalogue SKU a seller lists a new product under: the same product type, then the closest look
    (colour, camera layout, logo, shape), deterministic."""
    def closeness(c: Sku) -> tuple:
        f, g = sku.family, c.family
        return (c.colour == sku.colour, g.camera == f.camera, g.logo == f.logo, -abs(g.aspect - f.aspect), c.sku_id)
    return max((c for c in catalogue_skus() if c.product_type == sku.product_type), key=closeness)
