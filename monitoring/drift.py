"""Drift of the reviewer's live scores against its reference (`reviewops drift`, DAG `drift`).

The live window of the prediction log (smoke requests and rows served by other models than the
reference's left out) is compared with the reference (``monitoring.reference``) in one Evidently
Report: every column of ``monitoring.columns`` with its own drift test and threshold (K-S p-value
for the blur score, the top-1 SKU similarity, the manipulation score and each prohibited category's
probability; a Z-test for the auto-pass / manual-review mix), Evidently's verdict per column, the
distributions, and per-window statistics for the Evidently UI dashboard.

The window drifted when a ``trigger: true`` column drifted (the blur score or the top-1
similarity by default). Their p-value thresholds add up to at most ``monitoring.false_alarm_budget``
(checked by params.py), which bounds the chance that an undrifted window raises the alarm.

Each run writes ``<reports_dir>/<date>/drift-<time>.html`` (Evidently's report with a verdict
banner) and ``.json`` (the verdict per column and Evidently's metrics and tests), adds the snapshot
to the Evidently UI workspace and, on drift, writes an alert (``monitoring.alerts``) and calls the
webhook. ``run_drift`` returns whether the window drifted; the ``drift`` DAG then emits the
``reviewops://drift`` asset event that schedules ``retrain``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.params import P_VALUE_METHODS, Params, load_params

from . import alerts
from .reference import NUMERIC, PROHIBITED_PREFIX, ReferenceError, features, load_reference

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SMOKE_PREFIX = "smoke-"


class DriftError(RuntimeError):
    """The drift run cannot start (bad window, no reference)."""


@dataclass
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float | None              # p-value (p-value tests) or distance
    drifted: bool
    trigger: bool                    # drift here raises the alarm
    reference_mean: float | None
    current_mean: float | None
    detail: str = ""


@dataclass
class DriftResult:
    drifted: bool                    # a trigger column drifted: alert written, retrain to be signalled
    status: str                      # drift | no_drift | insufficient_data
    message: str
    window: str
    since: str
    until: str
    rows: int                        # live rows compared
    reference_rows: int
    excluded_rows: dict = field(default_factory=dict)   # reason -> rows left out of the window
    columns: list[ColumnDrift] = field(default_factory=list)
    drifted_columns: list[str] = field(default_factory=list)   # trigger columns that drifted
    watch_drifted: list[str] = field(default_factory=list)     # other columns that drifted (reported only)
    html: str | None = None
    json: str | None = None
    snapshot: str | None = None      # Evidently UI snapshot id
    project: str | None = None       # Evidently UI project id
    alert: dict | None = None
    asset: str = alerts.DRIFT_ASSET
    reference_models: dict = field(default_factory=dict)

    @property
    def report(self) -> str | None:
        return self.html

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"drift {self.window} window {self.since} .. {self.until}: {self.status.upper().replace('_', ' ')}"
                 f" ({self.rows} live rows vs {self.reference_rows} reference rows)", f"  {self.message}"]
        for reason, n in self.excluded_rows.items():
            lines.append(f"  left out: {n} rows ({reason})")
        for c in self.columns:
            score = "-" if c.score is None else f"{c.score:.3g}"
            mark = "DRIFT" if c.drifted else "ok"
            means = ("" if c.reference_mean is None or c.current_mean is None
                     else f"  mean {c.reference_mean:.3f} -> {c.current_mean:.3f}")
            lines.append(f"  {'*' if c.trigger else ' '} {c.column:24s} {c.method:10s} score {score:>9s} "
                         f"threshold {c.threshold:g}  {mark}{means}{('  ' + c.detail) if c.detail else ''}")
        lines.append("  (* trigger columns: their drift raises the alert and signals retrain)")
        if self.html:
            lines.append(f"report: {self.html}")
            lines.append(f"json:   {self.json}")
        if self.alert:
            hook = self.alert.get("webhook")
            lines.append(f"alert written ({self.alert['time']})" + (f"; webhook {hook}" if hook else "")
                         + f"; retrain is signalled by the {self.asset} asset (drift DAG)")
        return "\n".join(lines)


def parse_window(text: str) -> dt.timedelta:
    """``30m``, ``6h``, ``1d``, ``2w`` -> a timedelta; DriftError on anything else."""
    match = re.fullmatch(r"\s*([1-9][0-9]*)\s*([mhdw])\s*", str(text))
    if not match:
        raise DriftError(f"bad window {text!r}: expected a number and a unit m, h, d or w (e.g. 1d, 6h, 2w)")
    return dt.timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def _under(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def live_rows(root: Path, params: Params, since: dt.datetime, until: dt.datetime) -> pd.DataFrame:
    """The prediction log's rows with ``since <= ts < until``."""
    from .prediction_log import PredictionLog, resolve_url

    log = PredictionLog(resolve_url(params.serving.prediction_log, root))
    try:
        return log.read(since, until)
    finally:
        log.close()


def _select(rows: pd.DataFrame, models: dict) -> tuple[pd.DataFrame, dict]:
    """Rows answered by the reference's models, without smoke requests; and what was left out."""
    excluded = {}
    smoke = rows["request_id"].astype(str).str.startswith(SMOKE_PREFIX)
    if smoke.any():
        excluded["deploy smoke requests"] = int(smoke.sum())
    rows = rows[~smoke]
    if models:
        same = rows["models"].map(lambda m: isinstance(m, dict) and m == models)
        if (~same).any():
            others = sorted({json.dumps(m, sort_keys=True) for m in rows.loc[~same, "models"]})
            excluded[f"served by other models than the reference's: {'; '.join(others)[:300]}"] = int((~same).sum())
        rows = rows[same]
    return rows.reset_index(drop=True), excluded


def drift_columns(params: Params, reference: pd.DataFrame, triggers_only: bool = False) -> list[tuple[str, object]]:
    """(column, its DriftColumn settings) for every configured column (``triggers_only``: the alarm's)."""
    out = []
    for name, cfg in params.monitoring.columns.items():
        if triggers_only and not cfg.trigger:
            continue
        if name == "prohibited":
            out += [(c, cfg) for c in reference.columns if c.startswith(PROHIBITED_PREFIX)]
        else:
            out.append((name, cfg))
    return out


def build_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[tuple[str, object]],
                 categories: list[str], metadata: dict | None = None, with_stats: bool = True):
    """The Evidently Report (not run): drift per column with its test, and (``with_stats``) per-window statistics."""
    from evidently import Report
    from evidently.metrics import MeanValue, QuantileValue, RowCount, UniqueValueCount, ValueDrift
    from evidently.presets import DataDriftPreset

    from .workspace import DISTRIBUTION_COLUMNS, QUANTILES, TAGS

    names = [c for c, _ in columns]
    numeric = [c for c in names if c != "decision"]
    stats = [QuantileValue(column=c, quantile=q, tests=[]) for c in DISTRIBUTION_COLUMNS if c in numeric
             for q in QUANTILES]
    stats += [MeanValue(column=c, tests=[]) for c in numeric]
    if "decision" in names:
        stats.append(UniqueValueCount(column="decision", tests=[]))
    stats.append(RowCount(tests=[]))
    if not with_stats:
        # the same ValueDrift metrics (and tests) the preset generates, without its dataset-level widgets
        return Report([ValueDrift(column=c, method=cfg.method, threshold=cfg.threshold) for c, cfg in columns],
                      include_tests=True, tags=list(TAGS), metadata=metadata or {})
    preset = DataDriftPreset(columns=names, per_column_method={c: cfg.method for c, cfg in columns},
                             per_column_threshold={c: cfg.threshold for c, cfg in columns})
    return Report([preset, *stats], include_tests=True, tags=list(TAGS), metadata=metadata or {})


def _datasets(reference: pd.DataFrame, current: pd.DataFrame, columns: list[tuple[str, object]]):
    from evidently import DataDefinition, Dataset

    names = [c for c, _ in columns]
    numeric = [c for c in names if c != "decision"]
    categorical = [c for c in names if c == "decision"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return (Dataset.from_pandas(current[names].copy(), data_definition=definition),
            Dataset.from_pandas(reference[names].copy(), data_definition=definition))


def _verdicts(snapshot_dict: dict) -> dict[str, tuple[float | None, bool | None]]:
    """column -> (Evidently's drift score, Evidently's verdict) from the snapshot's metrics and tests."""
    scores = {}
    for metric in snapshot_dict["metrics"]:
        config = metric.get("config", {})
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            value = metric.get("value")
            scores[config["column"]] = None if value is None else float(value)
    verdicts = {}
    for test in snapshot_dict["tests"]:
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            verdicts[params["column"]] = test.get("status") == "FAIL"
    return {c: (s, verdicts.get(c)) for c, s in scores.items()}


def _mean(series: pd.Series) -> float | None:
    if series.dtype == object or series.notna().sum() == 0:
        return None
    return round(float(series.mean()), 6)


def _banner(result: DriftResult) -> str:
    colour = {"drift": "#b00020", "no_drift": "#1b5e20"}.get(result.status, "#8a6d00")
    rows = "".join(
        f"<tr><td>{'&#9733; ' if c.trigger else ''}{html.escape(c.column)}</td><td>{html.escape(c.method)}</td>"
        f"<td>{'-' if c.score is None else f'{c.score:.3g}'}</td><td>{c.threshold:g}</td>"
        f"<td style='color:{'#b00020' if c.drifted else '#1b5e20'}'>{'DRIFT' if c.drifted else 'ok'}</td>"
        f"<td>{'' if c.reference_mean is None else f'{c.reference_mean:.3f}'}</td>"
        f"<td>{'' if c.current_mean is None else f'{c.current_mean:.3f}'}</td></tr>"
        for c in result.columns)
    return (f"<div id='reviewops-verdict' style='font-family:sans-serif;margin:16px 24px;padding:12px 16px;"
            f"border-left:6px solid {colour};background:#fafafa'>"
            f"<h2 style='margin:0 0 6px;color:{colour}'>ReviewOps drift: {html.escape(result.status.replace('_', ' ').upper())}</h2>"
            f"<div>{html.escape(result.message)}</div>"
            f"<div>window {html.escape(result.since)} .. {html.escape(result.until)}: {result.rows} live rows against "
            f"{result.reference_rows} reference rows (models: {html.escape(json.dumps(result.reference_models))})</div>"
            "<table id='reviewops-columns' style='border-collapse:collapse;margin-top:8px' border='1' cellpadding='4'>"
            "<tr><th>column (&#9733; raises the alarm)</th><th>test</th><th>score</th><th>threshold</th><th>verdict</th>"
            f"<th>reference mean</th><th>live mean</th></tr>{rows}</table>"
            "<div style='color:#555;margin-top:6px'>The alarm is drift on a &#9733; column (params.yaml monitoring.columns). "
            "Evidently's &quot;Dataset Drift&quot; line below is its own rule (half of all columns drifted), not "
            "the alarm.</div></div>")


def _write(result: DriftResult, out_dir: Path, stamp: str, snapshot, snapshot_dict: dict | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"drift-{stamp}.json"
    if snapshot is not None:
        html_path = out_dir / f"drift-{stamp}.html"
        page = snapshot.get_html_str(as_iframe=False)
        page = page.replace("<body>", "<body>\n" + _banner(result), 1)
        html_path.write_text(page)
        result.html = str(html_path)
    result.json = str(json_path)
    doc = {"reviewops": result.as_dict(), "evidently": snapshot_dict}
    json_path.write_text(json.dumps(doc, indent=1, default=str))


@dataclass
class Comparison:
    """The verdict of one live sample against the reference (what ``run_drift`` and the calibration share)."""
    columns: list[ColumnDrift]
    tested: list[str]
    snapshot: object | None = None
    snapshot_dict: dict | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted and c.trigger]

    @property
    def watch_drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted and not c.trigger]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_columns)


def compare(reference: pd.DataFrame, current: pd.DataFrame, params: Params, categories: list[str] | None = None, *,
            timestamp: dt.datetime | None = None, name: str | None = None, metadata: dict | None = None,
            triggers_only: bool = False) -> Comparison:
    """Run the Evidently Report of ``current`` (drift features) against ``reference``; Evidently's verdict per column.

    Columns without values on either side (a family not served) are skipped and say so.
    ``triggers_only``: only the columns that decide the alarm, no statistics (the calibration's fast path).
    """
    categories = categories if categories is not None else \
        [c[len(PROHIBITED_PREFIX):] for c in reference.columns if c.startswith(PROHIBITED_PREFIX)]
    columns = drift_columns(params, reference, triggers_only)
    usable, skipped = [], {}
    for col, cfg in columns:
        if col not in current or col not in reference:
            skipped[col] = "not in the reference or the log"
        elif reference[col].notna().sum() < 2 or current[col].notna().sum() < 2:
            skipped[col] = "no values (the family is not served)"
        else:
            usable.append((col, cfg))
    out = Comparison([], [c for c, _ in usable])
    if not usable:
        out.columns = [ColumnDrift(c, cfg.method, cfg.threshold, None, False, cfg.trigger, None, None,
                                   f"skipped: {skipped[c]}") for c, cfg in columns]
        return out
    report = build_report(reference, current, usable, categories, metadata=metadata, with_stats=not triggers_only)
    cur_ds, ref_ds = _datasets(reference, current, usable)
    out.snapshot = report.run(current_data=cur_ds, reference_data=ref_ds,
                              timestamp=None if timestamp is None else timestamp.astimezone(dt.timezone.utc).replace(tzinfo=None),
                              name=name)
    out.snapshot_dict = out.snapshot.dict()
    verdicts = _verdicts(out.snapshot_dict)
    for col, cfg in columns:
        if col in skipped:
            out.columns.append(ColumnDrift(col, cfg.method, cfg.threshold, None, False, cfg.trigger, None, None,
                                           f"skipped: {skipped[col]}"))
            continue
        score, verdict = verdicts.get(col, (None, None))
        if verdict is None and score is not None:   # Evidently gave no test: its rule, by hand
            verdict = score < cfg.threshold if cfg.method in P_VALUE_METHODS else score >= cfg.threshold
        out.columns.append(ColumnDrift(col, cfg.method, cfg.threshold, score, bool(verdict), cfg.trigger,
                                       _mean(reference[col]), _mean(current[col])))
    return out


def run_drift(root: str | Path | None = None, window: str | None = None, *, until: dt.datetime | None = None,
              params: Params | None = None, alert: bool = True, workspace: bool = True) -> DriftResult:
    """Compare the live window ending at ``until`` (default now) with the reference; report, snapshot, alert.

    Returns a ``DriftResult`` whose ``drifted`` tells the ``drift`` DAG to emit ``reviewops://drift``.
    Raises DriftError when the window is malformed or no reference was stored.
    """
    root = Path(root or Path.cwd()).resolve()
    params = params or load_params(root / "params.yaml")
    window = window or params.monitoring.window
    span = parse_window(window)
    until = (until or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    since = until - span
    try:
        reference, meta = load_reference(root, params)
    except ReferenceError as exc:
        raise DriftError(str(exc)) from exc
    rows, excluded = _select(live_rows(root, params, since, until), meta.get("models") or {})
    categories = list(meta.get("categories") or [])
    current = features(rows, categories)
    result = DriftResult(False, "no_drift", "", window, since.isoformat(timespec="seconds"),
                         until.isoformat(timespec="seconds"), len(current), len(reference), excluded,
                         reference_models=meta.get("models") or {})
    stamp = until.strftime("%H%M%S")
    out_dir = _under(root, params.monitoring.reports_dir) / until.strftime("%Y-%m-%d")
    if len(current) < params.monitoring.min_rows:
        result.status = "insufficient_data"
        result.message = (f"{len(current)} live rows in the window, fewer than monitoring.min_rows "
                          f"({params.monitoring.min_rows}): no verdict")
        result.columns = [ColumnDrift(c, cfg.method, cfg.threshold, None, False, cfg.trigger, _mean(reference[c]),
                                      _mean(current[c]) if c in current else None, "not tested")
                          for c, cfg in drift_columns(params, reference)]
        _write(result, out_dir, stamp, None, None)
        return result
    found = compare(reference, current, params, categories, timestamp=until,
                    name=f"drift {result.since} .. {result.until}",
                    metadata={"window": window, "since": result.since, "until": result.until,
                              "reference_models": json.dumps(result.reference_models, sort_keys=True)})
    result.columns, result.drifted_columns, result.watch_drifted = found.columns, found.drifted_columns, found.watch_drifted
    result.drifted = found.drifted
    if found.snapshot is None:
        result.status, result.message = "insufficient_data", "no configured column has values on both sides"
        _write(result, out_dir, stamp, None, None)
        return result
    result.status = "drift" if result.drifted else "no_drift"
    if result.drifted:
        result.message = (f"drift on {', '.join(result.drifted_columns)}"
                          + (f" (also {', '.join(result.watch_drifted)})" if result.watch_drifted else ""))
    else:
        result.message = ("no drift on the trigger columns"
                          + (f"; drift reported (no alarm) on {', '.join(result.watch_drifted)}" if result.watch_drifted else ""))
    if workspace:
        from .workspace import add_snapshot

        result.project, result.snapshot = add_snapshot(
            root, params, found.snapshot, f"drift {result.since} .. {result.until}", found.tested, categories)
    if result.drifted and alert:
        # the report paths are known before writing: the alert names them
        result.html = str(out_dir / f"drift-{stamp}.html")
        result.json = str(out_dir / f"drift-{stamp}.json")
        result.alert = alerts.raise_alert(root, params, {
            "status": result.status, "message": result.message, "window": window, "since": result.since,
            "until": result.until, "rows": result.rows, "columns": result.drifted_columns,
            "scores": {c.column: c.score for c in result.columns if c.drifted},
            "report": result.html, "json": result.json, "reference_models": result.reference_models})
    _write(result, out_dir, stamp, found.snapshot, found.snapshot_dict)
    return result


__all__ = ["ColumnDrift", "Comparison", "DriftError", "DriftResult", "NUMERIC", "build_report", "compare",
           "parse_window", "run_drift"]
