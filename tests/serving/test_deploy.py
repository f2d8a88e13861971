"""Blue/green deploy with real components: real Bentos built by `bentoml build`, served by
`bentoml serve`, behind the real router process; golden expectations are real computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from pipelines.deploy.bluegreen import DeployError, deploy, status, stop_all
from pipelines.deploy.router import ensure_router, free_port, pid_alive, port_open, stop_router, write_active

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BENTOML = str(Path(sys.executable).with_name("bentoml"))
SERVICE = '''\
"""Toy reviewer: flags a photo that is too dark or too bright (mean grey level)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import bentoml
import numpy as np
from PIL import Image

VERSION = {version!r}
READY = {ready!r}


@bentoml.service(workers=1)
class ToyReviewer:
    def __is_ready__(self) -> bool:
        return READY

    @bentoml.api
    def review(self, photo: Path, sku_id: Optional[str] = None, category: Optional[str] = None,
               listing_id: Optional[str] = None) -> dict:
        with Image.open(photo) as im:
            mean = float(np.asarray(im.convert("L"), dtype=np.float64).mean())
        reasons = (["dark"] if mean < {dark} else []) + (["overexposed"] if mean > {bright} else [])
        if category == "phone" and not sku_id:
            reasons.append("sku_missing")
        return {{"listing_id": listing_id, "decision": "manual_review" if reasons else "auto_pass",
                "reasons": sorted(reasons), "version": VERSION, "brightness": mean}}
'''
DARK, BRIGHT = 80.0, 180.0
BENTOFILE = 'service: "service:ToyReviewer"\ninclude: ["service.py", "golden/*"]\npython:\n  lock_packages: false\n'
LEVELS = [40, 70, 95, 130, 165, 200, 235]          # mean grey levels of the golden photos


def expected(path: Path, fields: dict) -> tuple[str, list[str]]:
    """The toy rule, computed here from the decoded JPEG: what the build records as golden."""
    with Image.open(path) as im:
        mean = float(np.asarray(im.convert("L"), dtype=np.float64).mean())
    reasons = (["dark"] if mean < DARK else []) + (["overexposed"] if mean > BRIGHT else [])
    if fields.get("category") == "phone" and not fields.get("sku_id"):
        reasons.append("sku_missing")
    return ("manual_review" if reasons else "auto_pass"), sorted(reasons)


def write_golden(golden: Path, wrong: bool = False) -> None:
    golden.mkdir(parents=True)
    rng = np.random.default_rng(3)
    photos = []
    for i, level in enumerate(LEVELS):
        pixels = np.clip(rng.normal(level, 12, (48, 64, 3)), 0, 255).astype(np.uint8)
        name = f"{i:03d}.jpg"
        Image.fromarray(pixels).save(golden / name, quality=90)
        fields = {"sku_id": None if i % 3 == 0 else f"nova-{i}-red", "category": "phone" if i % 2 == 0 else None,
                  "listing_id": f"G{i:03d}"}
        decision, reasons = expected(golden / name, fields)
        photos.append({"file": name, **fields, "decision": decision, "reasons": reasons})
    if wrong:                                          # a recorded expectation the service will not meet
        photos[3]["decision"], photos[3]["reasons"] = "manual_review", ["blur"]
    (golden / "golden.json").write_text(json.dumps({"photos": photos}, indent=1))


def build_all(base: Path, env: dict) -> dict[str, str]:
    """Build v1, v2, v3 (wrong golden) and v4 (never ready) one after another; name -> tag.

    One at a time: BentoML's local store is not safe for concurrent builds (a build that lists the
    store while another writes fails with "does not contain a 'bento.yaml'").
    """
    specs = {"v1": ("v1", True, False), "v2": ("v2", True, False), "v3": ("v3", True, True), "v4": ("v4", False, False)}
    tags = {}
    for name, (version, ready, wrong) in specs.items():
        src = base / f"build-{name}"
        write_golden(src / "golden", wrong)
        (src / "service.py").write_text(SERVICE.format(version=version, ready=ready, dark=DARK, bright=BRIGHT))
        (src / "bentofile.yaml").write_text(BENTOFILE)
        proc = subprocess.run([BENTOML, "build", "-o", "tag", "--version", name, "."], cwd=src, env=env,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"bentoml build {name} failed:\n{proc.stdout}\n{proc.stderr}"
        tags[name] = next(x for x in proc.stdout.split() if x.startswith("__tag__:")).removeprefix("__tag__:")
    return tags


def serving_pids(tag: str) -> list[int]:
    """Live processes whose command line serves ``tag`` (the bentoml server and its workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if tag.encode() in cmd and pid_alive(int(d.name)):
                pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("deploy")
    env = {"BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    tags = build_all(base, {**os.environ, **env})
    state, port = base / "state", free_port()
    yield {"tags": tags, "env": env, "state": state, "port": port, "url": f"http://127.0.0.1:{port}"}
    stop_all(state)
    for tag in tags.values():
        for pid in serving_pids(tag):
            os.kill(pid, 9)


def run(stack, name: str, **kw) -> dict:
    return deploy(stack["tags"][name], state_dir=stack["state"], port=stack["port"], env=stack["env"],
                  ready_timeout=kw.pop("ready_timeout", 60), **kw)


def make_active(stack, name: str) -> dict:
    """Precondition of a test: ``name`` serves (a no-op when it already does)."""
    return run(stack, name)


def review(client: httpx.Client, url: str, photo: Path, **fields) -> httpx.Response:
    return client.post(f"{url}/review", data=fields, files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")})


def test_router_without_upstream(tmp_path):
    port = free_port()
    pid = ensure_router(tmp_path, port)
    try:
        assert ensure_router(tmp_path, port) == pid                 # already running: reused
        resp = httpx.get(f"http://127.0.0.1:{port}/review", timeout=5)
        assert resp.status_code == 503 and resp.json()["error"] == "no_upstream"
        write_active(tmp_path, "toy:none", f"http://127.0.0.1:{free_port()}", 0)
        resp = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert resp.status_code == 503 and resp.json()["error"] == "upstream_unavailable"
    finally:
        assert stop_router(tmp_path)
    assert not pid_alive(pid) and not port_open(port)


def test_deploy_v1_serves_through_router(stack):
    result = make_active(stack, "v1")
    assert result["bento"] == stack["tags"]["v1"]
    golden = stack["state"].parent / "build-v1" / "golden"
    with httpx.Client(timeout=10) as client:
        resp = review(client, stack["url"], golden / "000.jpg", listing_id="L1", category="phone")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["version"] == "v1" and body["listing_id"] == "L1"
        assert (body["decision"], body["reasons"]) == expected(golden / "000.jpg", {"category": "phone"})
        assert client.get(f"{stack['url']}/readyz?probe=1").status_code == 200
        assert client.get(f"{stack['url']}/no-such-route").status_code == 404      # upstream status passes through
    again = run(stack, "v1")
    assert again["outcome"] == "noop" and "already active" in again["message"]
    st = status(stack["state"])
    assert st["router"]["running"] and st["active"]["bento"] == stack["tags"]["v1"] and st["active"]["ready"]


def test_switch_to_v2_without_failed_requests(stack):
    old = make_active(stack, "v1")
    photo = stack["state"].parent / "build-v1" / "golden" / "005.jpg"
    seen: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    resp = review(client, stack["url"], photo, listing_id="bg")
                    seen.append((resp.status_code, resp.json().get("version")))
                    if resp.status_code != 200:
                        errors.append(resp.text)
                except Exception as exc:        # noqa: BLE001 - any failure counts
                    errors.append(repr(exc))
                time.sleep(0.02)                # leave CPU to the starting instance

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        result = run(stack, "v2")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert result["outcome"] == "deployed" and result["previous"] == stack["tags"]["v1"]
    assert not errors, errors[:5]
    versions = [v for _, v in seen]
    assert versions[0] == "v1" and versions[-1] == "v2" and len(seen) > 20
    assert not pid_alive(old["pid"]) and not serving_pids(stack["tags"]["v1"])
    assert not port_open(int(old["url"].rsplit(":", 1)[1]))
    with httpx.Client(timeout=10) as client:
        assert review(client, stack["url"], photo).json()["version"] == "v2"


def test_failed_smoke_keeps_v2(stack):
    make_active(stack, "v2")
    with pytest.raises(DeployError, match=r"smoke test failed on 1 of 7.*003\.jpg \(listing G003\): "
                                          r"expected manual_review \['blur'\], got auto_pass \[\]"):
        run(stack, "v3")
    assert not serving_pids(stack["tags"]["v3"])
    st = status(stack["state"])
    assert st["active"]["bento"] == stack["tags"]["v2"] and st["active"]["ready"]
    assert st["last"]["outcome"] == "failed" and "003.jpg" in st["last"]["reason"]
    photo = stack["state"].parent / "build-v1" / "golden" / "001.jpg"
    with httpx.Client(timeout=10) as client:
        assert review(client, stack["url"], photo).json()["version"] == "v2"


def test_never_ready_times_out_and_keeps_v2(stack):
    make_active(stack, "v2")
    start = time.monotonic()
    with pytest.raises(DeployError, match=r"readiness timeout.*within 10 s \(last answer: HTTP 503"):
        run(stack, "v4", ready_timeout=10)
    assert time.monotonic() - start < 30
    assert not serving_pids(stack["tags"]["v4"])
    assert status(stack["state"])["active"]["bento"] == stack["tags"]["v2"]
    photo = stack["state"].parent / "build-v1" / "golden" / "002.jpg"
    with httpx.Client(timeout=10) as client:
        assert review(client, stack["url"], photo).json()["version"] == "v2"
