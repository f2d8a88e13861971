"""What every ReviewOps DAG shares: owner, retries with backoff, the assets that chain the DAGs.

Wiring only (no project logic): each task calls one function of the app layer (``pipelines.app.tasks``,
``pipelines.app.monitors``, ``pipelines.app.active_learning``; through it ``pipelines`` and
``monitoring``), which finds the project at ``$REVIEWOPS_ROOT`` or beside ``dags/``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, ExceptionRetryPolicy, RetryAction, RetryRule

# Asset events chain the DAGs: ingest -> DATA -> retrain -> BENTO -> deploy; drift -> DRIFT -> retrain.
DATA = Asset("reviewops://data")        # a batch was versioned (extra: the batch ids)
BENTO = Asset("reviewops://bento")      # a reviewer Bento was built from new production models (extra: its tag)
DRIFT = Asset("reviewops://drift")      # the drift report found live traffic drifted from the reference

START = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["reviewops"]

# Retrying cannot fix a batch that failed validation, a refused candidate or a missing input:
# those fail at once (pipelines.app.tasks.PermanentError); everything else is retried.
PERMANENT = ExceptionRetryPolicy(rules=[
    RetryRule(exception="pipelines.app.tasks.PermanentError", action=RetryAction.FAIL,
              reason="permanent: the input or the verdict is wrong, a retry would give the same answer"),
])

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "retry_policy": PERMANENT,
}

# DVC and git hold one lock per work tree: tasks that run them go one at a time
# (the app layer also takes pipelines.data.version.repo_lock, which covers other DAGs and workers).
ONE_AT_A_TIME = {"max_active_tis_per_dag": 1}

# Celery queues (CeleryExecutor; the LocalExecutor and dag.test() ignore them). Every task whose app function
# writes the git/DVC work tree or the model registry under repo_lock (version, dvc repro of evaluate / reviewer,
# the gate's promotions, the build, the gallery and policy rollouts) goes to DVC_QUEUE, which ONE worker serves:
# on a shared volume the repo lock is only as good as the filesystem's flock. Training goes to TRAIN_QUEUE, so that
# the GPU machine can take it; it runs inside `dvc repro` (it writes models/ and dvc.lock), so the worker serving
# TRAIN_QUEUE is that same one DVC worker: `airflow celery worker --queues dvc,train,default` on the GPU machine.
# Every other task stays on DEFAULT_QUEUE ([operators] default_queue), which any worker may serve.
DVC_QUEUE = "dvc"
TRAIN_QUEUE = "train"
DEFAULT_QUEUE = "default"
DVC_WRITER = {"queue": DVC_QUEUE}
TRAINER = {"queue": TRAIN_QUEUE}
