"""The unlabelled pool: the photos selection may send to annotators, one row each.

A pool is a frame with the columns ``listing_id``, ``path`` (absolute), ``sha256`` and ``source_manifest``
(the manifest that holds the photo's other labels, or "" when there is none). It comes from

- a directory (:func:`pool_from_dir`): a generated batch, whose manifest names the photos (its labels are
  not used for selection), or any folder of JPEG/PNG photos;
- a list of photo files (:func:`pool_from_paths`), in arrival order: the photos the service archived and
  logged in the prediction log, which the app layer reads (``pipelines/app/active_learning.py``).

:func:`load_pool` leaves out the photos already in the versioned data and caps the pool at
``active_learning.pool_size``: a folder's first photos, a list's newest (its last).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipelines.data import manifest as mf
from pipelines.data.dataset import versioned_manifest
from pipelines.params import Params

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PoolError(ValueError):
    """No usable pool, or answers that cannot become a batch; the message says why."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pool_from_paths(paths: Sequence[Path]) -> pd.DataFrame:
    """Photo files as a pool; a file's stem is its listing id, and no source manifest is known."""
    ids = [Path(p).stem for p in paths]
    if len(set(ids)) != len(ids):
        raise PoolError("pool photos must have distinct file names (their stem is the listing id)")
    return pd.DataFrame({"listing_id": ids, "path": [str(p) for p in paths],
                         "sha256": [sha256_file(p) for p in paths], "source_manifest": ""})


def pool_from_dir(directory: str | Path) -> pd.DataFrame:
    """A generated batch (its manifest names the photos; labels are ignored) or a folder of photos."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise PoolError(f"pool {directory} is not a directory")
    if (directory / mf.MANIFEST_NAME).exists():
        rows = mf.read_manifest(directory)
        return pd.DataFrame({"listing_id": rows["listing_id"], "path": [str(directory / r) for r in rows["image"]],
                             "sha256": rows["sha256"], "source_manifest": str(directory / mf.MANIFEST_NAME)})
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise PoolError(f"pool {directory} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return pool_from_paths(paths)


def load_pool(root: Path, params: Params, pool: str | Path | Sequence[Path]) -> pd.DataFrame:
    """The unlabelled photos to score: ``pool`` minus the versioned photos, capped.

    ``pool`` is a directory (its first ``active_learning.pool_size`` photos are kept) or a list of photo
    files in arrival order, oldest first (its newest ``pool_size`` are kept).
    """
    in_order = not isinstance(pool, (str, Path))
    df = pool_from_paths(list(pool)) if in_order else pool_from_dir(pool)
    labelled = set(versioned_manifest(root)["sha256"])
    df = df[~df["sha256"].isin(labelled)]
    if df.empty:
        raise PoolError("every photo of the pool is already in the versioned data: nothing to label")
    cap = params.active_learning.pool_size
    return (df.tail(cap) if in_order else df.head(cap)).reset_index(drop=True)
