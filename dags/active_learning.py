"""### active_learning

Weekly (or triggered by hand): for every prohibited category and for the detector's dirt check,
score the unlabelled pool with the trained model and write an annotation queue of the photos it is
least sure of, with a Label Studio import file (`pipelines/active_learning/select.py`).

* Pool: the run's `pool` param (a folder of unlabelled photos), else the prediction log's photos.
* Output: `data/annotation/<family>[-<category>]/<run id>/` with `images/`, `queue.csv`,
  `label_studio.json` and `label_config.xml`; a retried task rewrites its own queue.
* Answers come back with `pipelines.active_learning.select.import_labels(export)` as a new batch in
  `data/incoming/`, then `reviewops validate` and `reviewops version` (the `ingest` DAG).

One task at a time: the tasks share the trunk-feature cache and the 2 CPU cores.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

ROOT = Path(os.environ.get("REVIEWOPS_ROOT") or Path(__file__).resolve().parents[1])

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
}


@dag(
    dag_id="active_learning",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    default_args=DEFAULT_ARGS,
    tags=["reviewops", "active-learning", "annotation"],
    doc_md=__doc__,
    params={
        "pool": Param(None, type=["null", "string"], description="folder of unlabelled photos (default: the prediction log)"),
        "k": Param(None, type=["null", "integer"], minimum=1, description="photos per queue (default: active_learning.k)"),
    },
)
def active_learning():
    @task
    def categories() -> list[str]:
        from pipelines.active_learning.select import prohibited_categories

        return prohibited_categories(ROOT)

    @task
    def select_prohibited(category: str, params=None, run_id=None) -> dict:
        from pipelines.active_learning.select import select_queue

        return select_queue(ROOT, "prohibited", category, k=params["k"], pool=params["pool"], stamp=run_id).as_dict()

    @task
    def select_dirt(params=None, run_id=None) -> dict:
        from pipelines.active_learning.select import select_queue

        return select_queue(ROOT, "detector", k=params["k"], pool=params["pool"], stamp=run_id).as_dict()

    select_prohibited.expand(category=categories())
    select_dirt()


active_learning()
