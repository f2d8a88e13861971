"""The Evidently UI workspace: one project for the reviewer, a snapshot per drift run, a dashboard.

    evidently ui --workspace monitoring/workspace --port 8000     # then open http://127.0.0.1:8000

The project (``monitoring.project``) is created on first use with its dashboard: the drift verdict
per column over time (each column's drift-test score), the blur-score and top-1-similarity
distributions over time (10th, 50th and 90th percentile per window), the mean probability of each
prohibited category, the decision mix and the rows per window. Each ``reviewops drift`` run adds
its Evidently snapshot, stamped with the end of its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelines.params import Params

QUANTILES = (0.1, 0.5, 0.9)
DISTRIBUTION_COLUMNS = ("blur_score", "sku_similarity")
TAGS = ["reviewops", "drift"]
DEFAULT_PORT = 8000


def workspace_path(root: Path, params: Params) -> Path:
    path = Path(params.monitoring.workspace)
    return path if path.is_absolute() else Path(root).resolve() / path


def ui_command(root: Path, params: Params, port: int = DEFAULT_PORT) -> str:
    return f"evidently ui --workspace {workspace_path(root, params)} --port {port}"


def _panels(columns: Sequence[str], categories: Sequence[str]) -> list:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel, text_panel

    def metric(name: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric=f"evidently:metric_v2:{name}", metric_labels=labels)

    panels = [
        text_panel("ReviewOps reviewer: live scores against the reference",
                   "Each point is one `reviewops drift` window. Drift tests and thresholds: params.yaml monitoring.columns; "
                   "the blur score and the top-1 SKU similarity raise the alarm."),
        counter_panel("Rows in the last window", [metric("RowCount", "rows")], size="half", aggregation="last"),
        counter_panel("Share of drifted columns (last window)",
                      [metric("DriftedColumnsCount", "share", value_type="share")], size="half", aggregation="last"),
        line_plot_panel("Drift test score per column (K-S p-value: drift below the threshold)",
                        [metric("ValueDrift", column, column=column) for column in columns]),
    ]
    for column in DISTRIBUTION_COLUMNS:
        panels.append(line_plot_panel(
            f"{column} distribution per window (10th / 50th / 90th percentile)",
            [metric("QuantileValue", f"p{int(q * 100)}", column=column, quantile=str(q)) for q in QUANTILES],
            size="half"))
    if categories:
        panels.append(line_plot_panel("Mean prohibited-category probability per window",
                                      [metric("MeanValue", c, column=f"prohibited_{c}") for c in categories]))
    panels.append(bar_plot_panel("Decision mix per window",
                                 [metric("UniqueValueCount", d, column="decision", value_type="share", label=d)
                                  for d in ("auto_pass", "manual_review")], stacked=True))
    return panels


def open_project(root: Path, params: Params, columns: Sequence[str] = (), categories: Sequence[str] = ()):
    """The workspace and the reviewer's project (created with its dashboard when missing)."""
    from evidently.ui.workspace import Workspace

    path = workspace_path(root, params)
    path.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(path))
    found = [p for p in ws.list_projects() if p.name == params.monitoring.project]
    if found:
        return ws, found[0]
    project = ws.create_project(params.monitoring.project,
                                description="Drift of the reviewer's live scores against its reference "
                                            "(ReviewOps monitoring/drift.py)")
    for panel in _panels(columns, categories):
        project.dashboard.add_panel(panel)
    return ws, project


def add_snapshot(root: Path, params: Params, snapshot, name: str, columns: Sequence[str] = (),
                 categories: Sequence[str] = ()) -> tuple[str, str]:
    """Add a drift run's snapshot to the reviewer's project; returns (project id, snapshot id)."""
    ws, project = open_project(root, params, columns, categories)
    ref = ws.add_run(project.id, snapshot, include_data=False, name=name)
    return str(project.id), str(getattr(ref, "id", ref))
