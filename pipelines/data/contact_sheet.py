"""A contact sheet: generated photos with their labels drawn on, for people to see the data.

``borderline=True`` shows instead the photos whose dirt or edit lies nearest the visibility rule
(``labels.visibility`` in params.yaml), on both sides of it, each captioned with the rule's inputs: is the
line drawn where a person would draw it?
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipelines.data.manifest import read_manifest
from pipelines.params import VisibilityParams, load_params

COLOURS = {"product": (60, 200, 60), "sticker": (0, 200, 255), "dirt": (255, 60, 60)}  # RGB
PROHIBITED_COLOUR = (255, 0, 255)
TILE, STRIP = 192, 44


def _labels(row) -> tuple[list[str], int]:
    """Caption lines under a photo, and which line is printed in red."""
    lines = [row.sku_id if row.sku_id != "none" else "(no product)"]
    flags = [f"blur {row.blur_score:.2f}" + (" X" if row.blur_dropped else "")]
    if row.sticker_missing:
        flags.append("no-sticker")
    if row.dirt:
        flags.append("dirt")
    if row.off_centre:
        flags.append("cut" if row.cut_by_frame else "off-centre")
    lines.append(" ".join(flags))
    extra = [f"!{c}" for c in row.prohibited]
    if row.manipulated:
        extra.append(f"edit:{row.manipulation_type}")
    if row.claimed_sku != row.sku_id:
        extra.append("wrong-claim")
    lines.append(" ".join(extra))
    return lines, 2


def _rule_labels(row) -> tuple[list[str], int]:
    """Caption of a borderline photo: the visibility rule's inputs for its dirt and its edit, the one near the
    rule in red. ``dirt 1/3``: spots labelled of those drawn; ``c``, ``a``: the most visible spot's contrast
    and area; ``t``: the edit's trace; ``o``, ``k``: a clone's object share and coarse trace; ``m``: the margin (>= 1 labelled)."""
    lines = [f"{row.sku_id if row.sku_id != 'none' else '(no product)'} m{row.margin:.2f}"]
    lines.append(f"dirt {row.dirt_spots_visible}/{row.dirt_spots_drawn} c{row.dirt_max_contrast:.3f} "
                 f"a{row.dirt_max_area_px:.0f}" if row.dirt_spots_drawn else "dirt -")
    share = f" o{row.clone_object_share:.2f} k{row.clone_coarse_trace:.3f}" if row.manipulation_drawn == "clone" else ""
    lines.append(f"edit {row.manipulation_drawn} t{row.manipulation_trace:.4f}{share} "
                 f"{'labelled' if row.manipulated else 'hidden'}" if row.manipulation_drawn != "none" else "edit -")
    return lines, 1 if row.near == "dirt" else 2


def margins(df: pd.DataFrame, rule: VisibilityParams) -> tuple[pd.Series, pd.Series]:
    """Per photo, where its drawn dirt (its most visible spot) and its drawn edit stand against the rule: the
    margin, >= 1 labelled and < 1 not (the smaller of the ratios to the thresholds); NaN where none was drawn."""
    dirt = np.minimum(df["dirt_max_area_px"] / rule.dirt_min_area_px, df["dirt_max_contrast"] / rule.dirt_min_contrast)
    edit = df["manipulation_trace"] / rule.manipulation_min_trace
    clone = df["manipulation_drawn"] == "clone"              # a clone also needs product or item in its squares
    seen = np.maximum(df["clone_object_share"] / max(rule.clone_min_object_share, 1e-9),
                      df["clone_coarse_trace"] / max(rule.clone_min_coarse_trace, 1e-9))
    edit = edit.where(~clone, np.minimum(edit, seen))
    return dirt.where(df["dirt_spots_drawn"] > 0), edit.where(df["manipulation_drawn"] != "none")


def borderline_cases(df: pd.DataFrame, rule: VisibilityParams, count: int) -> pd.DataFrame:
    """The ``count`` drawn defects nearest the rule (by |log margin|), half just below it and half just above
    where the batch has them, ordered by margin; each row with ``near`` (dirt or edit) and ``margin``."""
    dirt, edit = margins(df, rule)
    cand = pd.concat([df.assign(near="dirt", margin=dirt), df.assign(near="edit", margin=edit)])
    cand = cand.dropna(subset=["margin"])
    cand["distance"] = np.abs(np.log(cand["margin"].clip(lower=1e-6)))
    below = cand[cand["margin"] < 1].sort_values("distance")
    above = cand[cand["margin"] >= 1].sort_values("distance")
    below = below.head(max(count // 2, count - len(above)))
    return pd.concat([below, above.head(count - len(below))]).sort_values("margin")


def _tile(batch_dir: Path, row, caption) -> np.ndarray:
    img = cv2.imread(str(batch_dir / row.image), cv2.IMREAD_COLOR)
    img = cv2.cvtColor(cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    for box in row.boxes:
        colour = COLOURS.get(box["label"], PROHIBITED_COLOUR)
        p0 = (int(box["x0"] * TILE), int(box["y0"] * TILE))
        p1 = (int(box["x1"] * TILE) - 1, int(box["y1"] * TILE) - 1)
        cv2.rectangle(img, p0, p1, colour, 1)
    strip = np.full((STRIP, TILE, 3), 245, np.uint8)
    lines, red = caption(row)
    for k, text in enumerate(lines):
        cv2.putText(strip, text[:34], (3, 12 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.36,
                    (200, 0, 0) if k == red else (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([img, strip])


def write_contact_sheet(batch_dir: str | Path, out: str | Path, count: int = 64, columns: int = 8, *,
                        borderline: bool = False, rule: VisibilityParams | None = None) -> Path:
    """The first ``count`` photos of a batch with their labels; with ``borderline`` the ``count`` drawn defects
    nearest the visibility rule (``rule``, default params.yaml's ``labels.visibility``) with the rule's inputs."""
    batch_dir, out = Path(batch_dir), Path(out)
    if count <= 0:
        raise ValueError("count must be positive")
    if borderline:
        df = borderline_cases(read_manifest(batch_dir), rule or load_params().labels.visibility, count)
        if df.empty:
            raise ValueError(f"{batch_dir}: no dirt or edit drawn, no borderline case to show")
        tiles = [_tile(batch_dir, row, _rule_labels) for row in df.itertuples()]
    else:
        df = read_manifest(batch_dir).head(count)
        tiles = [_tile(batch_dir, row, _labels) for row in df.itertuples()]
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles[i:i + columns]])
            for i in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    legend = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    x = 6
    for name, colour in [*COLOURS.items(), ("prohibited", PROHIBITED_COLOUR)]:
        cv2.rectangle(legend, (x, 8), (x + 14, 20), colour, 2)
        cv2.putText(legend, name, (x + 20, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
        x += 130
    return _save(out, np.vstack([legend, sheet]))


def _save(out: Path, rgb: np.ndarray) -> Path:
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: a contact sheet is a PNG: name it *.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise ValueError(f"{out}: could not write the PNG (the name must end in .png, in a writable folder)")
    return out


def _captioned(img: np.ndarray, text: str) -> np.ndarray:
    img = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
    strip = np.full((18, TILE, 3), 245, np.uint8)
    cv2.putText(strip, text[:34], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (20, 20, 20), 1, cv2.LINE_AA)
    return np.pad(np.vstack([img, strip]), ((2, 2), (2, 2), (0, 0)), constant_values=255)


def write_style_sheet(out: str | Path, params=None, columns: int = 8, seed: int = 7) -> Path:
    """Generated products beside real photographs, for the eye: the same photo indices under each product style
    (``generator.product_style``; no blur, edit or prohibited item, so the product is what differs), then square
    crops of the real photographs the generator and training may use (``real_photos.train``) and of the checks
    nothing learns from (``real_photos.checks``), at the photos' size. Real material missing from this machine
    (``make photos`` installs it) is left out of its row."""
    import io

    from PIL import Image

    from pipelines.data import real_photos
    from pipelines.data.synth.scene import SceneConfig, render_photo

    params = params or load_params()
    size = params.data.image_size
    rows: list[tuple[str, list[np.ndarray]]] = []
    for style in ("flat", "shaded"):
        gen = params.generator.model_copy(update={"product_style": style, "blur_rate": 0.0, "manipulation_rate": 0.0,
                                                  "prohibited_rate": 0.0, "new_sku_rate": 0.0})
        cfg = SceneConfig(size, gen, params.labels, tuple(params.prohibited.categories))
        tiles = []
        for index in range(columns):
            jpeg, rec = render_photo(seed, index, cfg)
            tiles.append(_captioned(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), f"{style}: {rec['sku_id']}"))
        rows.append((f"generated, product_style {style}", tiles))
    rng = np.random.default_rng(seed)
    for name, refs in (("real material (real_photos.train)", params.real_photos.train),
                       ("real checks, never trained on (real_photos.checks)", params.real_photos.checks)):
        tiles = []
        for ref in refs:
            try:
                crop = real_photos.square_crop(rng, real_photos.load(ref), size)
            except real_photos.MissingPhoto:
                continue
            tiles.append(_captioned(crop, ref))
            if len(tiles) == columns:
                break
        if tiles:
            rows.append((name, tiles))
    width = columns * (TILE + 4)
    parts = []
    for title, tiles in rows:
        head = np.full((24, width, 3), 255, np.uint8)
        cv2.putText(head, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        tiles = tiles + [np.full_like(tiles[0], 255)] * (columns - len(tiles))
        parts += [head, np.hstack(tiles)]
    return _save(Path(out), np.vstack(parts))
