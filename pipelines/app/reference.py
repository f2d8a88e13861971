"""``reviewops reference`` and the retrain DAG's ``reference`` task: the drift reference of the production models.

The production models answer a sample of the live traffic mix (``monitoring.reference_source:
live_mix``, the photos live traffic is compared with), the validation split of the versioned data
(``val``: enriched in defects) or every photo of a batch, through the service's own path (:func:`pipelines.train.review.records`); monitoring stores
the rows (:func:`monitoring.reference.store_reference`). The gate only promotes: storing the
reference is this step of its own, run after a promotion.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from monitoring.reference import ReferenceError, store_reference
from pipelines.params import Params


def _validation_photos(root: Path) -> tuple[pd.DataFrame, str]:
    from pipelines.data.dataset import split_frame, versioned_manifest

    df = split_frame(versioned_manifest(root), "val")
    if df.empty:
        raise ReferenceError(f"no validation photos in the versioned data of {root}: version a batch first "
                             "(reviewops version)")
    return df, f"validation split of the versioned data ({', '.join(sorted(set(df['batch'])))})"


def _batch_photos(batch_dir: Path) -> tuple[pd.DataFrame, str]:
    from pipelines.data.manifest import read_photos

    return read_photos(batch_dir), f"batch {Path(batch_dir).resolve()}"


def _live_mix_photos(root: Path, params: Params, progress: bool) -> tuple[pd.DataFrame, str]:
    from pipelines.data.generate import LIVE_MIX_DIR, live_mix_batch

    df, _ = _batch_photos(live_mix_batch(root / LIVE_MIX_DIR, params, progress=progress))
    return df, f"live-mix sample ({len(df)} photos, params.yaml live_mix, seed {params.live_mix.seed})"


def build_reference(root: Path, params: Params, *, batch_dir: Path | None = None, source: str | None = None,
                    progress: bool = False) -> dict:
    """Answer the photos with every production model of the registry and store the rows as the reference.

    The photos: ``batch_dir`` when given, else ``source`` (default ``monitoring.reference_source``):
    ``live_mix`` or ``val``.
    """
    from pipelines.release import registry
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.review import records

    root = Path(root).resolve()
    versions = registry.production()
    if not versions:
        raise ReferenceError("no production model in the registry: run reviewops gate first")
    source = source or params.monitoring.reference_source
    if source not in ("live_mix", "val"):
        raise ReferenceError(f"unknown reference source {source!r}: live_mix or val")
    if batch_dir is not None:
        photos, source = _batch_photos(Path(batch_dir))
    elif source == "val":
        photos, source = _validation_photos(root)
    else:
        photos, source = _live_mix_photos(root, params, progress)
    models = ReviewerModels.as_served(registry.production_bundles(), params)
    rows = records(models, versions, photos, params, progress=progress)
    return store_reference(root, params, rows, versions, source)
