"""### gallery_deploy

Triggered by hand after the SKU gallery changed (`reviewops gallery add SKU PHOTOS...`, `gallery remove SKU`,
or the `ingest` DAG's `version` task, which enrols the catalogue SKUs a new batch brings). No retraining.

* **gallery_deploy**: `reviewops gallery deploy`: the gallery's photos (`gallery/`, DVC-tracked, `gallery.dvc`
  in git) are embedded by the production SKU model's own ONNX graph, decoded as the service decodes an
  upload; the bundle with the new `gallery.npy` is registered as a new `reviewops-sku` version and promoted;
  the reviewer Bento is built (its golden smoke set recomputed) and deployed blue/green behind the router on
  `serving.port`. **If the smoke set or the start fails, the old instance keeps serving** and the task fails.
  A gallery already in production is not registered again, and deploying the active Bento does nothing.

Params: `port` (default `serving.port`). Per-step timings: the task log and `reports/gallery_deploy.json`.
Code: `pipelines/app/tasks.py` (`gallery_deploy`), `pipelines/release/gallery.py`, `pipelines/data/gallery.py`.
"""

from __future__ import annotations

from datetime import timedelta

from _common import DEFAULT_ARGS, DVC_WRITER, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="gallery_deploy",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},     # a smoke mismatch fails again; a slow start may not
    tags=[*TAGS, "serving", "data"],
    doc_md=__doc__,
    params={"port": Param(None, type=["null", "integer"], minimum=1, maximum=65535,
                          description="serving port (default: serving.port of params.yaml)")},
)
def gallery_deploy():
    @task(**DVC_WRITER, execution_timeout=timedelta(minutes=30))
    def gallery_deploy(params=None) -> dict:
        from pipelines.app import tasks

        return tasks.gallery_deploy(port=params["port"])

    gallery_deploy()


gallery_deploy()
