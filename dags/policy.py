"""### policy_deploy

Triggered by hand when the business moves one check's operating point. No retraining.

* **policy_deploy**: `reviewops policy set CHECK (--threshold T | --recall R) --reason TEXT`: the effect of the new
  threshold on validation, test and the live mix is written to `reports/policy/<time>-<check>.html` first (with a
  recall target, the threshold is the highest reaching it on validation); a proposal whose test photo recall falls
  below the check's gate floor is refused (the task fails at once). Then the production bundle of the check's
  family is registered with the new threshold (the reason, the user and the time in its metadata), promoted, the
  reviewer Bento built (its golden smoke set recomputed with the new policy) and deployed blue/green behind the
  router on `serving.port`. **If the build, the start or the smoke set fails, the production pointer moves back
  and the old instance keeps serving.** A threshold already in production registers nothing.

Params: `check` (blur, sticker_missing, dirt, manipulation, prohibited:<category>, sku, sku_margin), one of
`threshold` or `recall`, `reason`, `port` (default `serving.port`). Record: the task log and
`reports/policy_deploy.json`; `reviewops policy show` lists every threshold and who set it.
Code: `pipelines/app/tasks.py` (`policy_deploy`), `pipelines/release/policy.py`.
"""

from __future__ import annotations

from datetime import timedelta

from _common import DEFAULT_ARGS, DVC_WRITER, START, TAGS
from airflow.sdk import Param, dag, task


@dag(
    dag_id="policy_deploy",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},     # a refused proposal fails at once; a slow start may not
    tags=[*TAGS, "serving", "policy"],
    doc_md=__doc__,
    params={"check": Param("blur", type="string", minLength=1,
                           description="blur | sticker_missing | dirt | manipulation | prohibited:<category> | sku | sku_margin"),
            "threshold": Param(None, type=["null", "number"], description="the new threshold (or give recall)"),
            "recall": Param(None, type=["null", "number"], minimum=0, maximum=1,
                            description="a photo-recall target: the threshold reaching it on validation"),
            "reason": Param("", type="string", description="why (kept in the registry, shown by reviewops policy show)"),
            "port": Param(None, type=["null", "integer"], minimum=1, maximum=65535,
                          description="serving port (default: serving.port of params.yaml)")},
)
def policy_deploy():
    @task(**DVC_WRITER, execution_timeout=timedelta(minutes=30))
    def policy_deploy(params=None) -> dict:
        from pipelines.app import tasks

        return tasks.policy_deploy(check=params["check"], threshold=params["threshold"], recall=params["recall"],
                                   reason=params["reason"], port=params["port"])

    policy_deploy()


policy_deploy()
