"""The task-level functions the monitoring DAGs call: ``drift`` and ``fp_report``, one per task.

Like :mod:`pipelines.app.tasks`: each takes the project ``root`` (default: ``$REVIEWOPS_ROOT``, else this
checkout), imports ``monitoring`` only when it runs, prints the monitor's summary in the task log and
returns the result as a JSON-able dict (the task's XCom).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.app.project import project_root
from pipelines.app.tasks import PermanentError


class MonitorUnavailable(PermanentError):
    """The monitor cannot run yet (no reference stored, a malformed window): retrying now cannot help."""


def drift(root: str | Path | None = None, window: str | None = None) -> dict:
    """``monitoring.drift.run_drift``: the Evidently report of live traffic against the reference."""
    from monitoring.drift import DriftError, run_drift

    root = project_root(root)
    try:
        result = run_drift(root, window=window)
    except DriftError as exc:
        raise MonitorUnavailable(str(exc)) from exc
    out = _plain(result)
    out = out if isinstance(out, dict) else {"result": out}
    out["drifted"] = bool(getattr(result, "drifted", out.get("drifted", False)))
    _show(result, out)
    return out


def fp_report(root: str | Path | None = None) -> dict:
    """``monitoring.fp_report.run_fp_report``: false positives per check from manual-review outcomes."""
    from monitoring.fp_report import run_fp_report

    result = run_fp_report(project_root(root))
    out = _plain(result)
    out = out if isinstance(out, dict) else {"result": out}
    _show(result, out)
    return out


def _plain(value: Any) -> Any:
    """A monitoring result as JSON-able data (dataclass, pydantic model, object or mapping)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "model_dump"):
        value = value.model_dump()
    elif not isinstance(value, (dict, list, tuple, str, int, float, bool, type(None))) and hasattr(value, "__dict__"):
        value = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if hasattr(value, "item"):                    # numpy scalars
        return value.item()
    return str(value)


def _show(result: Any, plain: dict) -> None:
    """The monitor's own summary in the task log (its JSON when it has none)."""
    text = result.summary() if callable(getattr(result, "summary", None)) else json.dumps(plain, indent=1, default=str)
    print(text[:6000], flush=True)
