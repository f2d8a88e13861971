"""Train / validation / test assignment by listing id.

The first versioned batch fixes the frozen test split; no later batch adds to or changes it.
Assignment is a pure function of the listing id, so validation (which checks for near-duplicates
between test and train) and versioning agree without sharing state.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from pipelines.params import Params

SPLITS = ("train", "val", "test")


def _unit(listing_id: str) -> float:
    digest = hashlib.sha256(f"reviewops-split:{listing_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(listing_ids: pd.Series, params: Params, *, first_batch: bool) -> pd.Series:
    """Split of each listing: the first batch gets test/val/train, later batches val/train only."""
    test, val = params.data.test_fraction, params.data.val_fraction

    def one(lid: str) -> str:
        u = _unit(lid)
        if first_batch:
            return "test" if u < test else "val" if u < test + val else "train"
        return "val" if u < val else "train"

    return listing_ids.map(one).rename("split")
