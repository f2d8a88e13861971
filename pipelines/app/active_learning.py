"""``reviewops select`` and the ``active_learning`` DAG's tasks: annotation queues of the photos the models
are least sure of (``pipelines/active_learning/``).

Without a ``pool`` folder, the pool is the photos the service archived (``serving.photo_archive``) and
logged in the prediction log (column ``image_path`` at ``serving.prediction_log``), each once, oldest
first: this module reads the log (monitoring) and hands the photo files to the selection, which scores
the newest ``active_learning.pool_size`` of them.

Every DAG task function takes the project ``root`` (default: ``$REVIEWOPS_ROOT``, else this checkout) and
returns a small JSON-able value (the task's XCom).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.app.project import project_root
from pipelines.params import Params, load_params

POOL_HINT = "pass --pool DIR (a folder of unlabelled photos, e.g. one `reviewops generate` wrote)"


def logged_photos(root: Path, params: Params) -> list[Path]:
    """The photos the service archived (column ``image_path`` of the prediction log), oldest first, once each,
    still on disk; a ``PoolError`` when there is no log or no such photo."""
    from sqlalchemy.exc import SQLAlchemyError

    from monitoring.prediction_log import PredictionLog, resolve_url
    from pipelines.active_learning.pool import PoolError

    url = resolve_url(params.serving.prediction_log, root)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise PoolError(f"no prediction log at {url}: {POOL_HINT}")
    log = PredictionLog(url)
    try:
        logged = log.read()["image_path"].dropna()
    except SQLAlchemyError as exc:
        raise PoolError(f"cannot read the prediction log {url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        log.close()
    paths = [p if p.is_absolute() else root / p for p in map(Path, dict.fromkeys(logged))]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise PoolError(f"the prediction log {url} names no archived photo that is still on disk "
                        f"(serving.photo_archive keeps them): {POOL_HINT}")
    return paths


def select(root: str | Path | None = None, family: str = "", category: str | None = None, *,
           k: int | None = None, pool: str | Path | None = None, stamp: str | None = None,
           strategy: str = "uncertainty", seed: int | None = None):
    """Write one annotation queue (``pipelines.active_learning.select.select_queue``) from ``pool`` (a folder)
    or, without one, from the prediction log's photos; returns the ``Queue``."""
    from pipelines.active_learning.select import check_target, select_queue

    root = project_root(root)
    params = load_params(root / "params.yaml")
    check_target(params, family, category, strategy)     # a wrong request fails before the log is read
    photos = pool if pool is not None else logged_photos(root, params)
    return select_queue(root, family, category, pool=photos, k=k, stamp=stamp, strategy=strategy, seed=seed,
                        params=params)


# ---------------------------------------------------------------- the active_learning DAG, one function per task

def categories(root: str | Path | None = None) -> list[str]:
    """The prohibited categories of params.yaml: one ``select_prohibited`` task each."""
    from pipelines.active_learning.select import prohibited_categories

    return prohibited_categories(project_root(root))


def select_prohibited(root: str | Path | None = None, category: str = "", k: int | None = None,
                      pool: str | None = None, stamp: str | None = None) -> dict:
    """The queue of one prohibited category (a retried task with the same ``stamp`` rewrites its own queue)."""
    return select(root, "prohibited", category, k=k, pool=pool, stamp=stamp).as_dict()


def select_dirt(root: str | Path | None = None, k: int | None = None, pool: str | None = None,
                stamp: str | None = None) -> dict:
    """The queue of the detector's dirt check."""
    return select(root, "detector", k=k, pool=pool, stamp=stamp).as_dict()
