"""A gallery change served without retraining: `reviewops gallery remove/add` then `gallery deploy` (registry, build,
blue/green with the smoke set), checked over real HTTP.

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
def gallery_stack(stack, tmp_path_factory):
    with stack_copy(stack, tmp_path_factory.mktemp("gallery-stack"), "gallery deploy") as state:
        yield state


def held_out_sku(repo: Path) -> tuple[str, list[Path], list[Path]]:
    """A catalogue SKU with at least 3 train photos and a photo outside train: (sku, 3 train photos, the others)."""
    from pipelines.data.dataset import versioned_manifest

    df = versioned_manifest(repo)
    df = df[(df["sku_id"] != "none") & ~df["new_sku"].astype(bool)].sort_values("listing_id")
    counts = df.groupby(["sku_id", "split"]).size().unstack(fill_value=0)
    ok = counts[(counts["train"] >= 3) & (counts.drop(columns="train").sum(axis=1) > 0)]
    assert len(ok), counts
    sku = ok.drop(columns="train").sum(axis=1).sort_values(kind="stable").index[-1]
    rows = df[df["sku_id"] == sku]
    train = [Path(p) for p in rows.loc[rows["split"] == "train", "path"].head(3)]
    return sku, train, [Path(p) for p in rows.loc[rows["split"] != "train", "path"]]


def review(url: str, photo: Path, sku: str) -> dict:
    resp = httpx.post(f"{url}/review", files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                      data={"sku_id": sku, "listing_id": f"gallery-{photo.stem}"}, timeout=120, trust_env=False)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def deploy(s: dict) -> tuple[dict, float]:
    start = time.perf_counter()
    done = cli(s["repo"], s["deploy_env"], "gallery", "deploy", "--port", str(s["port"]))
    took = time.perf_counter() - start
    assert "took " in done.stdout and "golden photos matched" in done.stdout, done.stdout
    return json.loads((s["repo"] / "reports" / "gallery_deploy.json").read_text()), took


def test_a_removed_sku_is_unknown_and_enrolled_again_it_matches_over_http_without_retraining(gallery_stack, monkeypatch):
    s = gallery_stack
    repo, env = s["repo"], s["env"]
    sku, train, others = held_out_sku(repo)
    photos = train + others
    models = {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()}
    trained = production({"env": env})["sku"]
    before = review(s["stack_url"], train[0], sku)["gallery_version"]

    start = time.perf_counter()
    cli(repo, env, "gallery", "remove", sku)
    removed, deploy_s = deploy(s)
    assert time.perf_counter() - start < 60 and deploy_s < 60, (deploy_s, removed["timings"])
    assert removed["registered"] and production({"env": env})["sku"] == removed["tag"] != trained
    answers = [review(s["url"], p, sku) for p in photos]
    for a in answers:                                     # claimed under a name the gallery no longer holds
        assert "unknown_sku" in a["reasons"] and a["checks"]["sku"]["known_sku"] is False
        assert a["checks"]["sku"]["predicted"] != sku
        assert a["gallery_version"] == removed["served_gallery_version"] != before

    start = time.perf_counter()
    cli(repo, env, "gallery", "add", sku, *map(str, train))
    added, deploy_s = deploy(s)
    took = time.perf_counter() - start
    assert took < 60 and deploy_s < 60, (took, added["timings"])   # enrol + deploy under a minute
    print(f"enrol {sku} + gallery deploy: {took:.1f} s; {added['timings']}")
    again = [review(s["url"], p, sku) for p in photos]
    for a, b in zip(again, answers):
        check = a["checks"]["sku"]
        assert "unknown_sku" not in a["reasons"] and check["known_sku"] is True
        assert check["similarity"] >= b["checks"]["sku"]["similarity"] - 1e-4   # a larger gallery: never less similar
        assert a["gallery_version"] == added["served_gallery_version"] not in (removed["served_gallery_version"], before)
    for a in again[:len(train)]:                          # the enrolled photos themselves: matched exactly
        assert a["checks"]["sku"]["predicted"] == sku and a["checks"]["sku"]["similarity"] >= 0.999, a["checks"]["sku"]
    history = (Path(env["BENTOML_HOME"]) / "reviewops" / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["reason"] for h in history[-2:]] == [f"gallery {removed['version']}",
                                                              f"gallery {added['version']}"]
    assert {p: p.stat().st_mtime_ns for p in (repo / "models").rglob("*") if p.is_file()} == models   # no retraining

    from pipelines.app import tasks

    monkeypatch.setenv("BENTOML_HOME", env["BENTOML_HOME"])
    unchanged = tasks.gallery_deploy(repo, s["port"])    # the DAG's task, the same gallery: nothing registered or switched
    assert not unchanged["registered"] and unchanged["tag"] == added["tag"] == production({"env": env})["sku"]
    assert "already active" in unchanged["deploy"], unchanged

    cli(repo, env, "gallery", "remove", sku)             # a gallery deploy that fails: production moves back
    failed = cli(repo, s["deploy_env"], "gallery", "deploy", "--port", str(s["port"]), "--ready-timeout", "0.001",
                 check=False)
    assert failed.returncode == 1 and "previous instance keeps serving" in failed.stderr, failed.stderr
    assert f"production sku moved back to {added['tag']}" in failed.stderr, failed.stderr
    assert production({"env": env})["sku"] == added["tag"]
    assert json.loads((Path(env["BENTOML_HOME"]) / "reviewops" / "history.jsonl").read_text()
                      .splitlines()[-1])["action"] == "rollback"
    assert review(s["url"], train[0], sku)["gallery_version"] == added["served_gallery_version"]   # the old one serves
