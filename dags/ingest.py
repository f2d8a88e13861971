"""### ingest

Hourly, or triggered by hand: a batch of labelled photos in `data/incoming/<batch>/` is validated
with Great Expectations, then versioned with DVC (add, git commit, push to the DVC remote).

* **Which batches:** the run's `batch` param, else every complete directory in `data/incoming/`
  (its `manifest.parquet` is there; producers write it last or rename the finished directory in).
* **validate** (one mapped task per batch): a failing batch is moved whole to
  `data/quarantine/<batch>/` with `validation_result.json` and the GE data docs, and the task
  **fails at once, without retries**: nothing of that run is versioned.
* **version** (one at a time: DVC holds one lock per work tree): `data/batches/<batch>` + its
  `.dvc` pointer committed. Versioning a batch that is already versioned changes nothing. Then the SKU
  gallery (`gallery/`) enrols the catalogue SKUs of the train split it lacks (`reviewops gallery seed`).
* **announce**: emits the `reviewops://data` asset event (extra: the new batch ids), which
  schedules `retrain`. It is skipped when nothing new was versioned.

Re-running is safe: a versioned batch is recognised, a quarantined one fails again with its report.
Code: `pipelines/app/tasks.py` (`find_batches`, `validate`, `version`).
"""

from __future__ import annotations

from _common import DATA, DEFAULT_ARGS, DVC_WRITER, ONE_AT_A_TIME, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="ingest",
    schedule="@hourly",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "data"],
    doc_md=__doc__,
    params={"batch": Param(None, type=["null", "string"],
                           description="batch id in data/incoming/ (default: every new complete batch)")},
)
def ingest():
    @task
    def find_batches(params=None) -> list[str]:
        from pipelines.app import tasks

        return tasks.find_batches(batch=params["batch"])

    @task(**ONE_AT_A_TIME, map_index_template="{{ task.op_kwargs['batch'] }}")
    def validate(batch: str) -> dict:
        from pipelines.app import tasks

        return tasks.validate(batch=batch)

    @task(**ONE_AT_A_TIME, **DVC_WRITER, map_index_template="{{ task.op_kwargs['validated']['batch'] }}")
    def version(validated: dict) -> dict:
        from pipelines.app import tasks

        return tasks.version(batch=validated["batch"])

    @task(outlets=[DATA])
    def announce(versioned: list[dict], outlet_events=None) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException
        from pipelines.app import tasks

        batches = tasks.new_batches(versioned)
        if not batches:
            raise AirflowSkipException("nothing new was versioned: no data event")
        outlet_events[DATA].extra = {"batches": batches}
        return batches

    announce(version.expand(validated=validate.expand(batch=find_batches())))


ingest()
