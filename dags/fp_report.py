"""### fp_report

Daily: the false-positive report per check from the manual-review outcomes of flagged photos
(`monitoring/fp_report.py`, its own issue): which check sends photos to people that they pass.

* **fp_report**: `monitoring.fp_report.run_fp_report`: the report (HTML/JSON) under `monitoring/`.

Code: `pipelines/app/monitors.py` (`fp_report`).
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, START, TAGS
from airflow.sdk import dag, task


@dag(
    dag_id="fp_report",
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "monitoring"],
    doc_md=__doc__,
)
def fp_report():
    @task
    def fp_report() -> dict:
        from pipelines.app import monitors

        return monitors.fp_report()

    fp_report()


fp_report()
