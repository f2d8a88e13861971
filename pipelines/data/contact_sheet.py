"""A contact sheet: generated photos with their labels drawn on, for people to see the data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipelines.data.manifest import read_manifest

COLOURS = {"product": (60, 200, 60), "sticker": (0, 200, 255), "dirt": (255, 60, 60)}  # RGB
PROHIBITED_COLOUR = (255, 0, 255)
TILE, STRIP = 192, 44


def _labels(row) -> list[str]:
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
    return lines


def _tile(batch_dir: Path, row) -> np.ndarray:
    img = cv2.imread(str(batch_dir / row.image), cv2.IMREAD_COLOR)
    img = cv2.cvtColor(cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    for box in row.boxes:
        colour = COLOURS.get(box["label"], PROHIBITED_COLOUR)
        p0 = (int(box["x0"] * TILE), int(box["y0"] * TILE))
        p1 = (int(box["x1"] * TILE) - 1, int(box["y1"] * TILE) - 1)
        cv2.rectangle(img, p0, p1, colour, 1)
    strip = np.full((STRIP, TILE, 3), 245, np.uint8)
    for k, text in enumerate(_labels(row)):
        cv2.putText(strip, text[:34], (3, 12 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.36,
                    (200, 0, 0) if k == 2 else (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([img, strip])


def write_contact_sheet(batch_dir: str | Path, out: str | Path, count: int = 64, columns: int = 8) -> Path:
    batch_dir, out = Path(batch_dir), Path(out)
    if count <= 0:
        raise ValueError("count must be positive")
    df = read_manifest(batch_dir).head(count)
    tiles = [_tile(batch_dir, row) for row in df.itertuples()]
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
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack([legend, sheet]), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out
