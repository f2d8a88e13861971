"""### active_learning

Weekly (or triggered by hand): for every prohibited category and for the detector's dirt check,
score the unlabelled pool with the trained model and write an annotation queue of the photos it is
least sure of, with a Label Studio import file (`pipelines/active_learning/`).

* **categories**: the prohibited categories of params.yaml, one `select_prohibited` task each.
* **select_prohibited** (mapped) and **select_dirt**: one queue each.
* Pool: the run's `pool` param (a folder of unlabelled photos), else the prediction log's photos.
* Output: `data/annotation/<family>[-<category>]/<run id>/` with `images/`, `queue.csv`,
  `label_studio.json` and `label_config.xml`; a retried task rewrites its own queue.
* Answers come back with `reviewops import-labels EXPORT` as a new batch in `data/incoming/`,
  then `reviewops validate` and `reviewops version` (the `ingest` DAG).

One task at a time: the tasks share the trunk-feature cache and the CPU cores.
Code: `pipelines/app/active_learning.py` (`categories`, `select_prohibited`, `select_dirt`).
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="active_learning",
    schedule="@weekly",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "active-learning", "annotation"],
    doc_md=__doc__,
    params={
        "pool": Param(None, type=["null", "string"], description="folder of unlabelled photos (default: the prediction log)"),
        "k": Param(None, type=["null", "integer"], minimum=1, description="photos per queue (default: active_learning.k)"),
    },
)
def active_learning():
    @task
    def categories() -> list[str]:
        from pipelines.app import active_learning

        return active_learning.categories()

    @task
    def select_prohibited(category: str, params=None, run_id=None) -> dict:
        from pipelines.app import active_learning

        return active_learning.select_prohibited(category=category, k=params["k"], pool=params["pool"], stamp=run_id)

    @task
    def select_dirt(params=None, run_id=None) -> dict:
        from pipelines.app import active_learning

        return active_learning.select_dirt(k=params["k"], pool=params["pool"], stamp=run_id)

    select_prohibited.expand(category=categories())
    select_dirt()


active_learning()
