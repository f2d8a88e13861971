"""The labels manifest of a data batch: one row per photo, every label the platform reviews.

A batch directory holds ``images/<listing_id>.jpg`` and ``manifest.parquet`` with these columns.
Boxes are normalised ``[x0, y0, x1, y1]`` in [0, 1] of the image, with a label: ``product``,
``sticker``, ``dirt`` or ``prohibited:<category>``. Versioned batches add a ``split`` column.
The ``dirt_*`` and ``manipulation_drawn``/``_trace`` columns are the generator's measurements behind the
visibility rule (``labels.visibility``): what was drawn, and how visible it was.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_NAME = "manifest.parquet"
IMAGES_DIR = "images"

BOX_TYPE = pa.struct([("label", pa.string()), ("x0", pa.float32()), ("y0", pa.float32()),
                      ("x1", pa.float32()), ("y1", pa.float32())])

# column -> (arrow type, meaning)
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "listing_id": (pa.string(), "unique id of the listing photo, also the image's file stem"),
    "batch": (pa.string(), "id of the batch the photo arrived in"),
    "image": (pa.string(), "path of the JPEG, relative to the batch directory"),
    "sha256": (pa.string(), "SHA-256 of the JPEG bytes"),
    "bytes": (pa.int64(), "size of the JPEG in bytes"),
    "width": (pa.int32(), "image width in px"),
    "height": (pa.int32(), "image height in px"),
    "category": (pa.string(), "listing category: a product type, or 'none' when no product is shown"),
    "sku_id": (pa.string(), "SKU shown in the photo, 'none' when no product"),
    "claimed_sku": (pa.string(), "SKU the seller claimed ('none' when no product)"),
    "new_sku": (pa.bool_(), "the SKU is outside the default catalogue (drift simulation)"),
    "blur_kind": (pa.string(), "none | defocus | motion"),
    "blur_strength": (pa.float32(), "defocus radius or motion length in px at 256 px"),
    "blur_votes": (pa.list_(pa.int8()), "three annotator votes: 0 clear, 1 slight, 2 obvious"),
    "blur_score": (pa.float32(), "sum of votes / 6, in [0, 1]"),
    "blur_dropped": (pa.bool_(), "votes contain both 0 and 2: contradictory, not used for training"),
    "blurred": (pa.bool_(), "blur_score >= labels.blur_threshold"),
    "stickers_expected": (pa.int8(), "anti-tamper stickers the product should carry"),
    "stickers_present": (pa.int8(), "stickers visible"),
    "sticker_missing": (pa.bool_(), "stickers_present < stickers_expected"),
    "dirt": (pa.bool_(), "at least one visible dirt spot on the product (labels.visibility)"),
    "dirt_spots_drawn": (pa.int8(), "dirt spots drawn on the product inside the frame, visible or not"),
    "dirt_spots_visible": (pa.int8(), "of those, the spots at or above labels.visibility (each has a dirt box)"),
    "dirt_max_contrast": (pa.float32(), "the most visible spot's contrast: its mean change (0..1) in its most changed "
                                        "RGB channel, after lighting gain and blur; 0 when no spot is drawn"),
    "dirt_max_area_px": (pa.float32(), "the most visible spot's area in the photo, px; 0 when no spot is drawn"),
    "center_dx": (pa.float32(), "product-box centre minus image centre, x, fraction of width"),
    "center_dy": (pa.float32(), "product-box centre minus image centre, y, fraction of height"),
    "cut_by_frame": (pa.bool_(), "the product extends past the image border"),
    "off_centre": (pa.bool_(), "offset beyond labels.centering_tolerance or cut by the frame"),
    "prohibited": (pa.list_(pa.string()), "prohibited categories shown (empty when none)"),
    "prohibited_drawn": (pa.list_(pa.string()), "prohibited categories drawn, seen or not (an item mostly under an "
                                                "edit's pasted content is drawn but not labelled: item_covered)"),
    "item_covered": (pa.float32(), "share of the prohibited item's pixels under content an edit pasted over it (a "
                                   "splice's photo, a clone's patch; 0..1); above labels.visibility.max_covered it is not "
                                   "labelled; 0 when no item or no such edit"),
    "manipulated": (pa.bool_(), "the photo was visibly edited after capture (manipulation_trace >= "
                                "labels.visibility.manipulation_min_trace; a clone also clone_object_share >= "
                                "labels.visibility.clone_min_object_share or clone_coarse_trace >= "
                                "labels.visibility.clone_min_coarse_trace)"),
    "manipulation_type": (pa.string(), "none | splice | clone | watermark | synthetic: the edit labelled"),
    "manipulation_drawn": (pa.string(), "the edit drawn, visible or not: none | splice | clone | watermark | synthetic"),
    "manipulation_trace": (pa.float32(), "mean luminance change (0..1) over the pixels the edit changed; 0 when none"),
    "clone_object_share": (pa.float32(), "a clone's larger share of product or item pixels in its source and "
                                         "destination squares (0..1); 0 for other edits and none"),
    "clone_coarse_trace": (pa.float32(), "a clone's trace at a coarse scale (manipulation.coarse_trace, 0..1); 0 for "
                                         "other edits and none"),
    "boxes": (pa.list_(BOX_TYPE), "labelled boxes: product, sticker, dirt, prohibited:<category>"),
    "lighting": (pa.string(), "lighting of the scene: normal | dark | bright | warm"),
    "background": (pa.string(), "background kind"),
    "seed": (pa.int64(), "generator seed of the batch"),
}

SCHEMA = pa.schema([(name, typ) for name, (typ, _) in COLUMNS.items()])
MANIPULATION_TYPES = ("none", "splice", "clone", "watermark", "synthetic")
BLUR_KINDS = ("none", "defocus", "motion")
BOX_LABELS_FIXED = ("product", "sticker", "dirt")


def write_manifest(df: pd.DataFrame, batch_dir: str | Path) -> Path:
    """Write ``df`` as the batch's manifest with the declared schema (extra columns kept at the end)."""
    path = Path(batch_dir) / MANIFEST_NAME
    extra = [c for c in df.columns if c not in COLUMNS]
    fields = list(SCHEMA) + [pa.field(c, pa.Table.from_pandas(df[[c]], preserve_index=False).schema[0].type)
                             for c in extra]
    table = pa.Table.from_pandas(df[[*COLUMNS, *extra]], schema=pa.schema(fields), preserve_index=False)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_manifest(batch_dir: str | Path) -> pd.DataFrame:
    path = Path(batch_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {batch_dir}")
    return pq.read_table(path).to_pandas()


def read_photos(batch_dir: str | Path) -> pd.DataFrame:
    """A batch's manifest with each photo's ``path`` (its ``image`` under ``batch_dir``)."""
    df = read_manifest(batch_dir)
    df["path"] = [str(Path(batch_dir) / rel) for rel in df["image"]]
    return df
