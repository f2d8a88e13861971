"""The Evidently UI an analyst opens (`evidently ui --workspace monitoring/workspace`): the reviewer's project, one
snapshot per drift run, and a dashboard whose every panel has a point per run (drift per column, the blur-score and
similarity distributions over time, category probabilities, decision mix); the page rendered in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.params import load_params
from tests.monitoring.test_reports_in_browser import chromium, needs_browser, not_blank

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ui(monitored, drift_runs):
    from pipelines.deploy.router import free_port

    from monitoring.workspace import workspace_path

    repo = monitored["repo"]
    port = free_port()
    proc = subprocess.Popen([str(BIN / "evidently"), "ui", "--workspace",
                             str(workspace_path(repo, load_params(repo / "params.yaml"))), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if client.get("/api/projects").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, "evidently ui exited"
                assert time.monotonic() < deadline, "evidently ui did not answer in 180 s"
                time.sleep(1)
            yield {"url": url, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_project_has_a_snapshot_per_drift_run_and_a_dashboard_with_data(ui, drift_runs, monitored):
    client = ui["client"]
    projects = [p for p in client.get("/api/projects").json() if p["name"] == "ReviewOps reviewer"]
    assert len(projects) == 1
    pid = projects[0]["id"]
    snapshots = client.get(f"/api/projects/{pid}/snapshots").json()
    runs = {s["metadata"]["until"] for s in snapshots}
    assert {drift_runs["quiet_doc"]["reviewops"]["until"], drift_runs["shifted_doc"]["reviewops"]["until"]} <= runs
    panels = client.get(f"/api/v2/dashboards/{pid}").json()["panels"]
    titles = [p["title"] for p in panels]
    assert any("blur_score distribution" in t for t in titles) and any("sku_similarity distribution" in t for t in titles)
    assert any(t.startswith("Drift test score per column") for t in titles) and "Decision mix per window" in titles
    for panel in panels:
        for value in panel["values"]:
            series = client.post(f"/api/v2/snapshots/{pid}/data_series_batch", json={"series_filter": [
                {"tags": [], "metadata": {}, "metric": value["metric"], "metric_labels": value["metric_labels"]}]}).json()
            points = [v for s in series["series"] for v in s["values"] if v is not None]
            if value["metric_labels"].get("label") == "auto_pass" and not points:
                continue                                  # the tiny reviewer sends every photo to a person
            assert len(points) >= 2, (panel["title"], value["metric_labels"])      # one per drift run
    blur_p50 = client.post(f"/api/v2/snapshots/{pid}/data_series_batch", json={"series_filter": [
        {"tags": [], "metadata": {}, "metric": "evidently:metric_v2:QuantileValue",
         "metric_labels": {"column": "blur_score", "quantile": "0.9"}}]}).json()
    by_time = dict(zip([s["timestamp"] for s in blur_p50["sources"]], blur_p50["series"][0]["values"]))
    first, last = sorted(by_time)[0], sorted(by_time)[-1]
    assert by_time[last] > by_time[first]               # the shifted day's blur scores are higher


@needs_browser
def test_the_dashboard_page_renders(ui, tmp_path):
    pid = ui["client"].get("/api/projects").json()[0]["id"]
    out = tmp_path / "evidently_ui.png"
    done = chromium(tmp_path, f"--screenshot={out}", "--window-size=1400,2400", "--hide-scrollbars",
                    f"{ui['url']}/projects/{pid}")
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    dom = chromium(tmp_path, "--dump-dom", f"{ui['url']}/projects/{pid}").stdout
    assert "Drift test score per column" in dom and "blur_score distribution per window" in dom
    assert dom.count("<svg") >= 5
    not_blank(out)
    keep = Path(__file__).resolve().parents[2] / "monitoring" / "reports" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out, keep / "evidently_ui.png")
