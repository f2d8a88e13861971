"""A policy change served without retraining: `reviewops policy set blur --threshold X` (effect report, registry,
build, blue/green with the smoke set), checked over real HTTP and by `reviewops policy show`.

A copy of the package's deployed stack (tests/serving/conftest.py) with its own model store and port, so the
promotions here never reach the other serving tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import cli, production, stack_copy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def policy_stack(stack, tmp_path_factory):
    with stack_copy(stack, tmp_path_factory.mktemp("policy-stack"), "policy deploy", REVIEWOPS_USER="pricing-team") as state:
        yield state


def review(url: str, photo: Path) -> dict:
    resp = httpx.post(f"{url}/review", files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                      data={"listing_id": f"policy-{photo.stem}"}, timeout=120, trust_env=False)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def store_models(home: Path) -> dict[str, list[str]]:
    """Family -> the versions of its model in the store."""
    return {d.name: sorted(v.name for v in d.iterdir() if v.is_dir()) for d in (home / "models").iterdir() if d.is_dir()}


def test_a_blur_threshold_set_by_the_platform_team_is_served_over_http_without_retraining(policy_stack, monkeypatch):
    s = policy_stack
    repo, env = s["repo"], s["env"]
    home = Path(env["BENTOML_HOME"])
    photo = sorted((repo / "data" / "batches" / "tiny-b1" / "images").glob("*.jpg"))[0]
    before = review(s["stack_url"], photo)
    shown = json.loads(cli(repo, env, "policy", "show", "--json").stdout)
    old = shown["families"]["blur"]["checks"]["blur"]["threshold"]
    assert old == before["checks"]["blur"]["threshold"] and shown["policy_version"] == before["policy_version"]
    assert shown["families"]["blur"]["checks"]["blur"]["source"].startswith("calibration on validation")
    tags, stored = production({"env": env}), store_models(home)
    models = {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()}
    new = round((old if old is not None else 0.5) + 0.0123, 4)

    dry = cli(repo, env, "policy", "set", "blur", "--threshold", str(new), "--dry-run")
    assert "dry run" in dry.stdout and f"-> {new:.4f}" in dry.stdout, dry.stdout
    assert production({"env": env}) == tags and store_models(home) == stored           # nothing registered
    refused = cli(repo, env, "policy", "set", "sharpness", "--threshold", "0.5", check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    start = time.perf_counter()
    done = cli(repo, s["deploy_env"], "policy", "set", "blur", "--threshold", str(new), "--reason", "Q3 blur budget",
               "--port", str(s["port"]))
    took = time.perf_counter() - start
    print(f"reviewops policy set blur --threshold {new}: {took:.1f} s\n{done.stdout}")
    assert "took " in done.stdout and "golden photos matched" in done.stdout, done.stdout
    record = json.loads((repo / "reports" / "policy_deploy.json").read_text())
    assert record["registered"] and record["old"] == old and record["new"] == new and record["reason"] == "Q3 blur budget"
    assert Path(record["effect"]["report"]).is_file() and Path(record["effect"]["report"]).parent == repo / "reports" / "policy"
    assert took < 90, (took, record["timings"])

    after = review(s["url"], photo)                                   # over HTTP, through the router
    assert after["checks"]["blur"]["threshold"] == new
    assert after["policy_version"] == record["policy_version"] != before["policy_version"]

    now = production({"env": env})
    assert now["blur"] == record["tag"] != tags["blur"]
    assert {f: t for f, t in now.items() if f != "blur"} == {f: t for f, t in tags.items() if f != "blur"}
    grown = store_models(home)
    assert {f: v for f, v in grown.items() if f != "reviewops-blur"} == {f: v for f, v in stored.items() if f != "reviewops-blur"}
    assert len(grown["reviewops-blur"]) == len(stored["reviewops-blur"]) + 1
    assert {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()} == models   # no retraining

    shown = cli(repo, env, "policy", "show").stdout
    line = next(x for x in shown.splitlines() if x.strip().startswith("blur ") and "set by" in x)
    assert f"{new:.4f}" in line and "set by pricing-team" in line and "Q3 blur budget" in line, shown
    assert f"policy {record['policy_version']} (deployed)" in shown, shown
    history = (home / "reviewops" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["reason"] == f"policy blur {old} -> {new}: Q3 blur budget"

    from pipelines.app import tasks

    monkeypatch.setenv("BENTOML_HOME", env["BENTOML_HOME"])
    again = tasks.policy_deploy(repo, "blur", threshold=new, port=s["port"])   # the DAG's task, the same threshold
    assert not again["registered"] and again["tag"] == record["tag"] == production({"env": env})["blur"]
    assert "already active" in again["deploy"], again

    start = time.perf_counter()                                       # a deploy that fails: production moves back
    failed = cli(repo, s["deploy_env"], "policy", "set", "blur", "--threshold", str(round(new + 0.01, 4)),
                 "--ready-timeout", "0.001", "--port", str(s["port"]), check=False)
    assert failed.returncode == 1 and "previous instance keeps serving" in failed.stderr, failed.stderr
    assert f"production blur moved back to {record['tag']}" in failed.stderr, failed.stderr
    assert production({"env": env}) == now and json.loads(history_of(home)[-1])["action"] == "rollback"
    assert review(s["url"], photo)["checks"]["blur"]["threshold"] == new              # the old instance serves
    print(f"failed policy deploy, rolled back: {time.perf_counter() - start:.1f} s")


def history_of(home: Path) -> list[str]:
    return (home / "reviewops" / "history.jsonl").read_text().splitlines()
