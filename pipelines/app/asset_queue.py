"""Airflow's asset queue, read by the DAG tests (``tests/dags/dagrun.py``) and ``make demo``."""

from __future__ import annotations


def queued_asset_runs() -> list[tuple[str, str]]:
    """``(dag_id, asset uri)`` of every run that asset events queued for the scheduler, sorted.

    Read from the Airflow database of this process's ``AIRFLOW_HOME``. Only unpaused DAGs get queued
    runs; ``airflow dags test`` runs no scheduler, so they wait there for one.
    """
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetDagRunQueue.target_dag_id, AssetModel.uri)
                               .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)).all()
    return sorted((dag_id, uri) for dag_id, uri in rows)
