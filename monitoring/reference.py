"""The drift reference: the production models' outputs on the validation split, stored at promotion.

The reference rows are computed by the app layer through the service's own code path
(``pipelines.train.review.records``: the ONNX bundles of every production model, ``decide`` and
``log_record``), photo by photo as the service would answer it with the claimed SKU and the
category of the listing, so reference rows and prediction-log rows are the same numbers for the
same photo. This module is handed those rows and stores them as

    <monitoring.reference>/reference.parquet   one row per validation photo: the drift features
    <monitoring.reference>/reference.json      models (family -> tag), source, rows, categories, time

``reviewops reference`` stores it (the retrain DAG's ``reference`` task, after a promotion).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.params import Params, load_params

REFERENCE_FILE = "reference.parquet"
META_FILE = "reference.json"
NUMERIC = ("blur_score", "sku_similarity", "manipulation_score", "sticker_missing_score", "dirt_score",
           "centring_offset")
PROHIBITED_PREFIX = "prohibited_"


class ReferenceError(RuntimeError):
    """No usable reference (never stored, unreadable, or nothing to compute it from)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _under(root: Path, path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(root).resolve() / path


def reference_dir(root: Path, params: Params) -> Path:
    return _under(root, params.monitoring.reference)


def features(frame: pd.DataFrame, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """The drift features of prediction-log rows (``PredictionLog.read`` or a list of records as a frame).

    Numeric scores (NaN where a family did not answer), one ``prohibited_<category>`` column per
    category (``categories``, default: every category seen) and the ``decision``.
    """
    out = pd.DataFrame(index=frame.index)
    for name in NUMERIC:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float) if name in frame else np.nan
    probs = frame["prohibited"] if "prohibited" in frame else pd.Series([None] * len(frame), index=frame.index)
    if categories is None:
        categories = sorted({k for d in probs if isinstance(d, dict) for k in d})
    for cat in categories:
        out[f"{PROHIBITED_PREFIX}{cat}"] = [float(d[cat]) if isinstance(d, dict) and d.get(cat) is not None
                                            else np.nan for d in probs]
    out["decision"] = frame["decision"].astype(str) if "decision" in frame else "unknown"
    return out.reset_index(drop=True)


def store_reference(root: str | Path, params: Params, records: Sequence[Mapping], versions: Mapping[str, str],
                    source: str) -> dict:
    """Store the reference from the prediction-log ``records`` the production ``versions`` gave for the
    photos of ``source``; returns its metadata. The app layer computes the records
    (``pipelines.train.review.records``, the service's own path): monitoring reads no model and no registry.
    """
    if not records:
        raise ReferenceError(f"no photo to compute the reference from ({source})")
    root = Path(root).resolve()
    frame = features(pd.DataFrame.from_records(list(records)))
    frame.insert(0, "listing_id", [r["listing_id"] for r in records])
    frame["reasons"] = [json.dumps(r["reasons"]) for r in records]
    categories = sorted(c[len(PROHIBITED_PREFIX):] for c in frame.columns if c.startswith(PROHIBITED_PREFIX))
    meta = {"created": _now().isoformat(timespec="seconds"), "models": dict(sorted(versions.items())),
            "source": source, "rows": len(frame), "categories": categories,
            "auto_pass_share": round(float((frame["decision"] == "auto_pass").mean()), 4) if len(frame) else None,
            "means": {c: round(float(frame[c].mean()), 6) for c in NUMERIC if frame[c].notna().any()}}
    out = reference_dir(root, params)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{REFERENCE_FILE}.tmp-{os.getpid()}"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out / REFERENCE_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def load_reference(root: str | Path, params: Params | None = None) -> tuple[pd.DataFrame, dict]:
    """The stored reference frame and its metadata; ReferenceError (saying what to run) when there is none."""
    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    where = reference_dir(root, params)
    if not (where / REFERENCE_FILE).exists() or not (where / META_FILE).exists():
        raise ReferenceError(f"no drift reference in {where}: run `reviewops reference` (the retrain DAG "
                             "stores it after a promotion)")
    return pd.read_parquet(where / REFERENCE_FILE), json.loads((where / META_FILE).read_text())


def summary(meta: dict, where: Path | None = None) -> str:
    lines = [f"reference: {meta['rows']} rows from the {meta['source']}"
             + (f" -> {where}" if where is not None else ""),
             f"  models: {', '.join(f'{f}={t}' for f, t in meta['models'].items())}",
             f"  auto-pass share {meta.get('auto_pass_share')}; means: "
             + ", ".join(f"{k} {v:.3f}" for k, v in meta.get("means", {}).items())]
    return "\n".join(lines)
