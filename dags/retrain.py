"""### retrain

Runs on new data (the `reviewops://data` asset event of `ingest`), on drift (`reviewops://drift`
of `drift`), every Monday at 03:00 UTC, or by hand. It trains only what changed, gates it, and
builds a new reviewer Bento when production changed.

* **train** (one mapped task per model family, one at a time): `dvc repro` of the family's
  `dvc.yaml` train stage(s) whose data, code or params changed since `dvc.lock`; an unchanged
  family is not retrained (the task says "nothing changed").
* **evaluate** (per family): `dvc repro evaluate@<family>` when its model changed:
  `metrics/<family>.json` and `plots/<family>/` on the frozen test split.
* **reviewer**: `dvc repro reviewer real_photos` when a candidate changed: every candidate together,
  through the one decision rule, on validation and test: `metrics/reviewer.json` (clean auto-pass,
  per-defect photo and reason recall); then the candidates on real photos nothing trained on:
  `metrics/real_photos.json`.
* **gate**: `reviewops gate`: each candidate meeting every recall floor and its real-photo limits without
  regressing production is registered in the BentoML model store (ONNX bundle, metadata) and promoted;
  verdicts `promoted`, `unchanged` or `refused`, reports in `reports/gate/<family>.md`.
* **build**: `reviewops build` when the production models differ from the last Bento; emits
  `reviewops://bento` (extra: the tag), which schedules `deploy`. Skipped when nothing changed.
* **reference**: `reviewops reference` when the gate promoted a family: the new production models'
  answers to the validation split become the drift reference. Skipped when nothing was promoted.
* **check_verdicts**: fails the run (no retries) when the gate refused a candidate, after the
  promoted families were built: production stays on the old model for the refused ones.

Running it twice on unchanged data trains nothing, promotes nothing and builds nothing.
DVC holds one lock per work tree: training tasks go one at a time (and wait on `ingest`'s version step).
Code: `pipelines/app/tasks.py` (`train`, `evaluate`, `reviewer`, `gate`, `build`, `reference`, `check_verdicts`).
"""

from __future__ import annotations

from _common import BENTO, DATA, DEFAULT_ARGS, DRIFT, DVC_WRITER, ONE_AT_A_TIME, START, TAGS, TRAINER
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from pipelines.train.families import FAMILIES


@dag(
    dag_id="retrain",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=(DATA | DRIFT)),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "training"],
    doc_md=__doc__,
)
def retrain():
    @task(**ONE_AT_A_TIME, **TRAINER, map_index_template="{{ task.op_kwargs['family'] }}")
    def train(family: str) -> dict:
        from pipelines.app import tasks

        return tasks.train(family=family)

    @task(**ONE_AT_A_TIME, **DVC_WRITER, map_index_template="{{ task.op_kwargs['trained']['family'] }}")
    def evaluate(trained: dict) -> dict:
        from pipelines.app import tasks

        return tasks.evaluate(family=trained["family"])

    @task(**ONE_AT_A_TIME, **DVC_WRITER)
    def reviewer(evaluated: list[dict]) -> dict:
        from pipelines.app import tasks

        return tasks.reviewer()

    @task(**DVC_WRITER)
    def gate(reviewed: dict) -> dict:
        from pipelines.app import tasks

        return tasks.gate()

    @task(**DVC_WRITER, outlets=[BENTO])
    def build(gated: dict, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from pipelines.app import tasks

        result = tasks.build()
        if not result["built"]:
            raise AirflowSkipException(result["message"])
        outlet_events[BENTO].extra = {"bento": result["bento"]}
        return result

    @task
    def reference(gated: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from pipelines.app import tasks

        result = tasks.reference(gated=gated)
        if not result["stored"]:
            raise AirflowSkipException(result["message"])
        return result

    @task(trigger_rule="none_failed")
    def check_verdicts(gated: dict) -> dict:
        from pipelines.app import tasks

        return tasks.check_verdicts(gated)

    gated = gate(reviewer(evaluate.expand(trained=train.expand(family=list(FAMILIES)))))
    build(gated) >> check_verdicts(gated)
    reference(gated)


retrain()
