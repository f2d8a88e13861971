"""### drift

Daily: the Evidently drift report of live traffic (the prediction log: blur scores, top-1 SKU
similarity, decisions, ...) against the reference window (`monitoring/drift.py`, its own issue).

* **drift**: `monitoring.drift.run_drift`: the HTML/JSON report and whether traffic drifted.
* **signal_retrain**: when it drifted, emits the `reviewops://drift` asset event, which schedules
  `retrain` (which retrains only what new labelled data or changed params call for). Skipped otherwise.

Param: `window` (default: the monitor's own window). Code: `pipelines/app/monitors.py` (`drift`).
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, DRIFT, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="drift",
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "monitoring"],
    doc_md=__doc__,
    params={"window": Param(None, type=["null", "string"],
                            description="live-traffic window, e.g. 1d or 7d (default: the monitor's)")},
)
def drift():
    @task
    def drift(params=None) -> dict:
        from pipelines.app import monitors

        return monitors.drift(window=params["window"])

    @task(outlets=[DRIFT])
    def signal_retrain(report: dict, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not report["drifted"]:
            raise AirflowSkipException("no drift: retrain is not signalled")
        outlet_events[DRIFT].extra = {"report": report.get("report") or report.get("html")}
        return report

    signal_retrain(drift())


drift()
