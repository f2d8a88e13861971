"""The versioned data set as the trainers see it: every batch under ``data/batches/``, with splits.

``pipelines.data.version`` writes this layout; everything downstream reads it through these functions:

    data/batches/<ID>/manifest.parquet   labels + ``split`` (train|val|test) + ``phash`` (hex pHash)
    data/batches/<ID>/images/*.jpg       the photos (DVC-tracked: ``data/batches/<ID>.dvc`` in git)
    data/test_split.json                 the frozen test split fixed by the first batch (git-tracked):
                                         {"batch", "listing_ids", "phash" (hex), "created"}
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.data.manifest import COLUMNS, MANIFEST_NAME, read_photos
from pipelines.data.splits import SPLITS

BATCHES_DIR = Path("data/batches")
INCOMING_DIR = Path("data/incoming")
TEST_SPLIT_FILE = Path("data/test_split.json")


def _root(repo: str | Path | None) -> Path:
    return Path(repo if repo is not None else Path.cwd()).resolve()


def versioned_manifest(repo: str | Path | None = None) -> pd.DataFrame:
    """Every versioned batch's manifest, concatenated in batch-id order, with an absolute ``path``.

    A batch whose pointer (``data/batches/<ID>.dvc``) is there but whose data is not is an error
    that names the fix (``dvc pull``), never a silently smaller data set.
    """
    batches = _root(repo) / BATCHES_DIR
    pointers = sorted(batches.glob("*.dvc")) if batches.is_dir() else []
    missing = [p.stem for p in pointers if not (batches / p.stem / MANIFEST_NAME).exists()]
    if missing:
        raise FileNotFoundError(f"versioned batches {missing} are not in the workspace: run `dvc pull` "
                                f"(or `dvc checkout`) in {_root(repo)}")
    frames = []
    for pointer in pointers:
        batch_dir = batches / pointer.stem
        df = read_photos(batch_dir)
        if "split" not in df.columns:
            raise ValueError(f"{batch_dir / MANIFEST_NAME} has no split column: not versioned by pipelines.data.version")
        df["batch"] = pointer.stem
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "split", "phash", "path"])
    return pd.concat(frames, ignore_index=True)


def split_frame(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split (``train``, ``val`` or ``test``), re-indexed from 0."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    return df[df["split"] == split].reset_index(drop=True)


def read_test_split(repo: str | Path | None = None) -> dict | None:
    """The frozen test split record, or None before the first batch is versioned."""
    path = _root(repo) / TEST_SPLIT_FILE
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def frozen_test_ids(repo: str | Path | None = None) -> list[str]:
    """Listing ids of the frozen test split (sorted); empty before the first batch is versioned."""
    record = read_test_split(repo)
    return [] if record is None else sorted(record["listing_ids"])


def frozen_test_phashes(repo: str | Path | None = None) -> list[str]:
    """pHashes (hex) of the frozen test photos, ready for ``pipelines.data.phash.near_duplicates``."""
    record = read_test_split(repo)
    return [] if record is None else list(record["phash"])
