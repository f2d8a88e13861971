"""Drift alerts: one JSON line per alert in ``monitoring.alerts``, and a webhook POST where one is configured.

The webhook gets the alert record as JSON (``Content-Type: application/json``); its answer (HTTP
status, or the error) is kept in the record. A webhook that is down never fails the drift run: the
alert record is written either way. Retraining is signalled by the ``reviewops://drift`` Airflow
asset, which the ``drift`` DAG emits when ``run_drift`` reports drift.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from pipelines.params import Params

DRIFT_ASSET = "reviewops://drift"   # airflow.sdk.Asset("reviewops://drift"): the `retrain` DAG is scheduled on it
ENV_WEBHOOK = "REVIEWOPS_ALERT_WEBHOOK"   # overrides monitoring.webhook_url (e.g. a secret Slack URL)


def alerts_path(root: Path, params: Params) -> Path:
    path = Path(params.monitoring.alerts)
    return path if path.is_absolute() else Path(root).resolve() / path


def webhook_url(params: Params) -> str | None:
    return os.environ.get(ENV_WEBHOOK) or params.monitoring.webhook_url


def post_webhook(url: str, payload: dict, timeout: float) -> dict:
    """POST ``payload``; returns {"url", "status"} or {"url", "error"} (never raises)."""
    import httpx

    try:
        response = httpx.post(url, json=payload, timeout=timeout, trust_env=False)
        return {"url": url, "status": response.status_code, "ok": response.is_success}
    except httpx.HTTPError as exc:
        return {"url": url, "error": f"{type(exc).__name__}: {exc}", "ok": False}


def raise_alert(root: Path, params: Params, alert: dict[str, Any]) -> dict:
    """Record ``alert`` (a drift summary) with its time and, where configured, the webhook's answer."""
    record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "kind": "drift",
              "asset": DRIFT_ASSET, **alert}
    url = webhook_url(params)
    if url:
        record["webhook"] = post_webhook(url, {k: v for k, v in record.items() if k != "webhook"},
                                         params.monitoring.webhook_timeout_s)
    path = alerts_path(root, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    return record


def read_alerts(root: Path, params: Params) -> list[dict]:
    path = alerts_path(root, params)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
