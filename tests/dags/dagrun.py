"""Run one DAG with ``dag.test()`` against the Airflow of ``$AIRFLOW_HOME`` and print what happened as JSON.

    python tests/dags/dagrun.py DAGS_FOLDER DAG_ID '{"conf": "json"}'

Run as a subprocess (the tests give it its own AIRFLOW_HOME, SQLite): Airflow reads its configuration
once per process. The last line of stdout is ``RESULT {...}``: the run's state, every task instance
(state, tries, rendered map index, return value), the asset events the run emitted and the runs that
asset events queued for the scheduler (``[dag_id, asset uri]``).
"""

from __future__ import annotations

import json
import sys


def main(dags: str, dag_id: str, conf: dict) -> dict:
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.app.asset_queue import queued_asset_runs

    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    run = bag.dags[dag_id].test(run_conf=conf)
    with create_session() as session:
        xcoms = {(x.task_id, x.map_index): XComModel.deserialize_value(x)
                 for x in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value"))}
        events = [{"uri": uri, "extra": e.extra, "task": e.source_task_id}
                  for e, uri in session.execute(select(AssetEvent, AssetModel.uri)
                                                .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                                                .where(AssetEvent.source_run_id == run.run_id))]
    queued = [list(q) for q in queued_asset_runs()]
    tis = [{"task": ti.task_id, "map_index": ti.map_index, "state": str(ti.state), "tries": ti.try_number,
            "name": ti.rendered_map_index, "result": xcoms.get((ti.task_id, ti.map_index))}
           for ti in sorted(run.get_task_instances(), key=lambda t: (t.task_id, t.map_index))]
    return {"state": str(run.state), "run_id": run.run_id, "tis": tis, "events": events, "queued": queued}


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    print("RESULT " + json.dumps(result, default=str), flush=True)
