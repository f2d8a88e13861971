"""### deploy

Runs when `retrain` built a new reviewer Bento (the `reviewops://bento` asset event), or by hand.

* **deploy**: blue/green on this machine (`pipelines/deploy/bluegreen.py`): `bentoml serve` of the new Bento
  on a free loopback port, wait for `GET /readyz`, replay the Bento's golden smoke set (photos of
  the frozen test split with the decisions recorded at build time), then switch the router on the
  serving port (`serving.port` of params.yaml, 3000) to it and stop the old instance. **If anything
  fails, the old instance keeps serving** and the task fails with the reason. Deploying the Bento
  that is already active does nothing.
* **verify**: one golden photo through the public port: `POST /review` answers 200 with a decision.

Params: `bento` (default: the last one `retrain` built, `reports/build.json`), `port` (default
`serving.port`). State, logs and deploy history: `.reviewops/deploy/`.
Code: `pipelines/app/tasks.py` (`deploy`, `verify`).
"""

from __future__ import annotations

from datetime import timedelta

from _common import BENTO, DEFAULT_ARGS, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="deploy",
    schedule=[BENTO],
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},     # a smoke mismatch fails again; a slow start may not
    tags=[*TAGS, "serving"],
    doc_md=__doc__,
    params={
        "bento": Param(None, type=["null", "string"], description="Bento tag (default: the last one built)"),
        "port": Param(None, type=["null", "integer"], minimum=1, maximum=65535,
                      description="serving port (default: serving.port of params.yaml)"),
    },
)
def deploy():
    @task(execution_timeout=timedelta(minutes=30))
    def deploy(params=None) -> dict:
        from pipelines.app import tasks

        return tasks.deploy(bento=params["bento"], port=params["port"])

    @task
    def verify(deployed: dict, params=None) -> dict:
        from pipelines.app import tasks

        return tasks.verify(port=params["port"])

    verify(deploy())


deploy()
