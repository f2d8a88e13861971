"""The whole reviewer over photos of the versioned data, answered exactly as the service answers them.

Evaluation's path to the decision: every photo is decoded like an upload
(:func:`pipelines.serve.photo_input.decode_photo`), scored by the bundles on ONNX Runtime
(:class:`pipelines.serve.models.ReviewerModels`), decided by :func:`pipelines.serve.decision.decide`
with the claimed SKU and category of its listing, and turned into the prediction-log row by
:func:`pipelines.serve.decision.log_record`. The build's smoke set, the drift reference and the
decision-parity test all come from here, so none of them can disagree with the service.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.params import Params
from pipelines.serve.decision import decide, log_record
from pipelines.serve.models import ReviewerModels, prepare
from pipelines.serve.photo_input import archive_photo, decode_photo, photo_limits


def given(value: Any) -> str | None:
    """A manifest value as the service receives it: 'none', '' and NaN mean "not sent"."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value in ("none", ""):
        return None
    return str(value)


def claims(row: Mapping) -> dict:
    """The fields a calling service sends with a photo of the manifest: claimed SKU and category."""
    return {"sku_id": given(row.get("claimed_sku")), "category": given(row.get("category"))}


def _batches(photos: pd.DataFrame, params: Params, batch_size: int, progress: bool) -> Iterator[pd.DataFrame]:
    starts = range(0, len(photos), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="review photos", unit="batch")
    for start in starts:
        yield photos.iloc[start:start + batch_size]


BATCH_SIZE = 32


def decoded_batches(photos: pd.DataFrame, params: Params, *, batch_size: int = BATCH_SIZE,
                    progress: bool = False) -> Iterator[np.ndarray]:
    """The photos of ``photos`` (``path``), in order, decoded like uploads: uint8 [n, S, S, 3] per batch."""
    limits, size = photo_limits(params), params.data.image_size
    for chunk in _batches(photos.reset_index(drop=True), params, batch_size, progress):
        rgbs = [prepare(decode_photo(Path(p).read_bytes(), **limits), size) for p in chunk["path"]]
        yield np.stack(rgbs)


def review(models: ReviewerModels, photos: pd.DataFrame, params: Params, *, batch_size: int = BATCH_SIZE,
           progress: bool = False) -> list[tuple[dict, dict]]:
    """``(answer, raw)`` for every row of ``photos`` (``path``, optional ``claimed_sku`` and ``category``)."""
    raws = [raw for rgbs in decoded_batches(photos, params, batch_size=batch_size, progress=progress)
            for raw in models.infer(rgbs)]
    rows = photos.reset_index(drop=True)
    return [(decide(raw, models.metas, **claims(row)), raw) for raw, (_, row) in zip(raws, rows.iterrows())]


def records(models: ReviewerModels, versions: Mapping[str, str], photos: pd.DataFrame, params: Params, *,
            request_prefix: str = "ref-", ts: Sequence | None = None, archive: str | Path | None = None,
            progress: bool = False) -> list[dict]:
    """The prediction-log rows the service would append for ``photos`` (request ids ``<prefix><listing_id>``).

    ``ts`` gives each row its answer time (default: now, as the log stamps it); with ``archive`` the
    photo is kept there by SHA-256 as the service does, and ``image_path`` names it.
    """
    rows = photos.reset_index(drop=True)
    out = []
    for i, ((answer, raw), (_, row)) in enumerate(zip(review(models, rows, params, progress=progress), rows.iterrows())):
        answer = {"request_id": f"{request_prefix}{row['listing_id']}", **answer}
        record = log_record(answer, raw, listing_id=str(row["listing_id"]), models=versions)
        if ts is not None:
            record["ts"] = ts[i]
        if archive is not None:
            record["image_path"] = str(archive_photo(Path(row["path"]).read_bytes(), Path(archive)))
        out.append(record)
    return out
