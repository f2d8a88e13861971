"""The reviewer's API as calling services see it: the served OpenAPI contract, answers that keep it, readiness
that answers within a second, versions in every answer and log row, and the optional bearer token.

Uses the package's deployed stack (tests/serving/conftest.py); the token test deploys a second instance.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.monitoring.test_reports_in_browser import chromium, needs_browser
from tests.serving.conftest import photo, production

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def contract(client) -> dict:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    return resp.json()


def conforms(doc: dict, method: str, path: str, resp: httpx.Response) -> dict:
    """The answer's status is one the contract declares for the route, and its JSON body keeps that schema."""
    declared = doc["paths"][path][method]["responses"]
    assert str(resp.status_code) in declared, f"{method.upper()} {path} answered {resp.status_code}, not in {sorted(declared)}: {resp.text[:300]}"
    schema = declared[str(resp.status_code)]["content"]["application/json"]["schema"]
    body = resp.json()
    errors = sorted(Draft202012Validator({**schema, "components": doc["components"]}).iter_errors(body), key=str)
    assert not errors, f"{method.upper()} {path} {resp.status_code} breaks the contract: {errors[0].message} at " \
                       f"{list(errors[0].absolute_path)}"
    return body


def test_the_contract_describes_every_route_body_and_error(stack, contract):
    from pipelines.params import load_params
    from pipelines.serve.contract import ERRORS

    assert contract["openapi"].startswith("3.1")
    assert {p: set(v) for p, v in contract["paths"].items()} == {
        "/review": {"post"}, "/review_batch": {"post"}, "/feedback": {"post"}, "/models": {"get"},
        "/readyz": {"get"}, "/healthz": {"get"}, "/metrics": {"get"}}
    for name, schema in contract["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    review = contract["paths"]["/review"]["post"]["requestBody"]["content"]
    form = review["multipart/form-data"]["schema"]
    assert form["required"] == ["photo"] and form["properties"]["photo"]["format"] == "binary"
    assert set(form["properties"]) == {"photo", "sku_id", "category", "listing_id"}
    assert review["application/json"]["schema"] == {"$ref": "#/components/schemas/ReviewJSON"}
    assert contract["components"]["schemas"]["ReviewJSON"]["required"] == ["photo_b64"]
    batch = contract["paths"]["/review_batch"]["post"]["requestBody"]["content"]
    assert batch["multipart/form-data"]["schema"]["properties"]["photo"]["type"] == "array"
    categories = load_params(stack["repo"] / "params.yaml").prohibited.categories
    prohibited = contract["components"]["schemas"]["Checks"]["properties"]["prohibited"]["anyOf"][0]
    assert sorted(prohibited["required"]) == sorted(categories)
    declared = {code for v in contract["paths"].values() for op in v.values()
                for r in op["responses"].values() for s in [r.get("content", {}).get("application/json", {})]
                for code in s.get("schema", {}).get("allOf", [{}, {}])[-1].get("properties", {}).get("error", {}).get("enum", [])}
    assert declared == set(ERRORS) - {"unauthorized"}            # no token on this deployment
    assert "securitySchemes" not in contract["components"]


def test_every_error_code_the_service_raises_is_in_the_contract():
    from pipelines.serve.contract import ERRORS

    sources = [*(PROJECT / "pipelines" / "serve").glob("*.py"), PROJECT / "bentos" / "service.py",
               PROJECT / "monitoring" / "feedback.py"]
    raised = {(int(status), code) for path in sources
              for status, code in re.findall(r'(?:PhotoError\(|return |_error\()\s*([45]\d\d), \{?"?(?:"error": )?"([a-z_]+)"',
                                             path.read_text())}
    raised |= {(503, "overloaded"), (400, "missing_field")}
    assert {code for _, code in raised} >= {"bad_multipart", "photo_not_a_file", "bad_feedback", "truncated_photo"}
    assert not {(s, c) for s, c in raised if ERRORS.get(c, (None,))[0] != s}, \
        f"raised but not in the contract (or under another status): {sorted(r for r in raised if ERRORS.get(r[1], (None,))[0] != r[0])}"


def test_real_answers_keep_the_contract(stack, client, contract):
    path = photo(stack)
    data = path.read_bytes()
    b64 = base64.b64encode(data).decode()
    ok = conforms(contract, "post", "/review", client.post(
        "/review", files={"photo": (path.name, data, "image/jpeg")}, data={"sku_id": "nova-11-red", "listing_id": "L9"}))
    assert ok["listing_id"] == "L9" and ok["models"] == production(stack)
    conforms(contract, "post", "/review", client.post("/review", json={"photo_b64": b64}))
    batch = conforms(contract, "post", "/review_batch", client.post(
        "/review_batch", json={"items": [{"photo_b64": b64, "sku_id": "nova-11-red"}, {"photo_b64": "bm90IGEgcGhvdG8="}]}))
    assert "decision" in batch["results"][0] and batch["results"][1]["error"] == "not_an_image"
    bad = {
        "empty_photo": client.post("/review", files={"photo": ("a.jpg", b"", "image/jpeg")}),
        "not_an_image": client.post("/review", files={"photo": ("a.txt", b"hello", "text/plain")}),
        "unsupported_content_type": client.post("/review", content=b"x", headers={"content-type": "text/plain"}),
        "invalid_json": client.post("/review", content=b"{", headers={"content-type": "application/json"}),
        "unknown_field": client.post("/review", json={"photo_b64": b64, "colour": "red"}),
        "bad_field": client.post("/review", json={"photo_b64": b64, "sku_id": 7}),
        "missing_field": client.post("/review", json={"sku_id": "x"}),
        "bad_base64": client.post("/review", json={"photo_b64": "%%%"}),
        "too_many_photos": client.post("/review", files=[("photo", ("a.jpg", data, "image/jpeg"))] * 2),
        "bad_batch": client.post("/review_batch", json=[1]),
        "empty_batch": client.post("/review_batch", json={"items": []}),
        "bad_feedback": client.post("/feedback", json={"listing_id": "L9", "verdicts": {"nonsense": True}}),
    }
    for code, resp in bad.items():
        route = str(resp.request.url.path)
        assert conforms(contract, "post", route, resp)["error"] == code, (code, resp.text)
    stored = conforms(contract, "post", "/feedback", client.post(
        "/feedback", json={"listing_id": "L9", "request_id": ok["request_id"], "verdicts": {"blur": False}}))
    assert stored["stored"] == 1
    served = conforms(contract, "get", "/models", client.get("/models"))
    assert served["policy_version"] == ok["policy_version"] and served["gallery_version"] == ok["gallery_version"]
    assert conforms(contract, "get", "/readyz", client.get("/readyz")) == {"ready": True, "reason": "ok"}


def test_every_answer_carries_the_versions_and_each_threshold_with_or_without_a_product(stack, client):
    from monitoring.prediction_log import PredictionLog

    served = client.get("/models").json()
    assert set(served["models"]) == set(production(stack))
    for family, model in served["models"].items():
        assert model["tag"] == production(stack)[family] and model["metrics"], family   # test-split figures
    assert re.fullmatch(r"[0-9a-f]{16}", served["policy_version"])
    assert re.fullmatch(r"[0-9a-f]{16}", served["gallery_version"])
    answers = []
    for i in range(8):
        path = photo(stack, i)
        answers.append(client.post("/review", files={"photo": (path.name, path.read_bytes(), "image/jpeg")},
                                   data={"listing_id": f"versions-{i}"}).json())
    found = {a["checks"]["centering"]["product_found"] for a in answers}
    shapes = {json.dumps({k: sorted(v) if isinstance(v, dict) else None for k, v in a["checks"].items()}, sort_keys=True)
              for a in answers}
    assert len(shapes) == 1, f"answers differ in their fields (product found: {found}): {shapes}"
    for a in answers:
        assert (a["policy_version"], a["gallery_version"]) == (served["policy_version"], served["gallery_version"])
        for c, v in a["checks"]["prohibited"].items():
            assert set(v) == {"score", "threshold", "flag"} and v["flag"] == (f"prohibited:{c}" in a["reasons"])
    rows = PredictionLog(f"sqlite:///{stack['repo'] / 'monitoring' / 'predictions.sqlite'}").read()
    rows = rows[rows["listing_id"].astype(str).str.startswith("versions-")]
    assert len(rows) == 8
    assert set(rows["policy_version"]) == {served["policy_version"]}
    assert set(rows["gallery_version"]) == {served["gallery_version"]}


@needs_browser
def test_the_docs_page_renders_the_contract_offline(stack, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", f"{stack['url']}/docs")
    assert dom.returncode == 0, dom.stderr[-2000:]
    paths = re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom.stdout)
    assert set(paths) == {"/review", "/review_batch", "/feedback", "/models", "/readyz", "/healthz", "/metrics"}
    assert "errors-wrapper" not in dom.stdout, "Swagger UI reports errors in the contract"


def _checks_worker(server: int) -> int:
    """The pid of the model worker (BentoML's process serving reviewops-checks) of the ``bentoml serve`` ``server``."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                parent = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == server and b"reviewops-checks" in cmd:
                return int(d.name)
    raise AssertionError(f"no model worker under the server {server}")


def test_readyz_says_503_within_a_second_of_the_model_workers_death_and_200_after_it_recovers(stack, client):
    from pipelines.deploy.router import read_active

    before = client.get("/readyz")
    assert before.status_code == 200, before.text
    os.kill(_checks_worker(read_active(stack["repo"] / ".reviewops" / "deploy")["pid"]), signal.SIGKILL)
    killed = time.monotonic()
    seen, slowest = [], 0.0
    while time.monotonic() - killed < 90:
        t0 = time.monotonic()
        resp = client.get("/readyz", timeout=5)
        slowest = max(slowest, time.monotonic() - t0)
        seen.append((round(time.monotonic() - killed, 2), resp.status_code, resp.json()["reason"]))
        if resp.status_code == 200 and any(s == 503 for _, s, _ in seen):
            break
        time.sleep(0.05)
    first_503 = next((t for t, s, _ in seen if s == 503), None)
    assert first_503 is not None and first_503 <= 1.0, f"no 503 within 1 s of the kill: {seen[:10]}"
    assert seen[-1][1] == 200, f"never back to 200: {seen[-5:]}"
    assert slowest <= 1.0, f"a readiness answer took {slowest:.2f} s"
    assert "model worker" in next(r for _, s, r in seen if s == 503)
    assert client.get("/healthz").status_code == 200                 # liveness is not readiness
    path = photo(stack)
    assert client.post("/review", files={"photo": (path.name, path.read_bytes(), "image/jpeg")}).status_code == 200


def test_with_a_token_every_route_but_health_readiness_metrics_and_the_contract_needs_it(stack, tmp_path):
    from pipelines.deploy.bluegreen import deploy, stop_all
    from pipelines.deploy.router import free_port

    token = "s3cret-" + os.urandom(8).hex()
    bento = httpx.get(f"{stack['url']}/models", timeout=30).json()["bento"]
    port, state = free_port(), tmp_path / "deploy"
    env = {k: stack["env"][k] for k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")}
    env.update(REVIEWOPS_API_TOKEN=token, REVIEWOPS_ROOT=str(tmp_path))
    try:
        deploy(bento, state_dir=state, port=port, env=env, ready_timeout=120)   # its smoke set carries the token
        url = f"http://127.0.0.1:{port}"
        path = photo(stack)
        files = {"photo": (path.name, path.read_bytes(), "image/jpeg")}
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            for auth in (None, "Bearer wrong", f"Basic {token}", f"Bearer {token}x", "Bearer"):
                headers = {"Authorization": auth} if auth else {}
                for method, route in (("post", "/review"), ("post", "/review_batch"), ("post", "/feedback"),
                                      ("get", "/models")):
                    resp = c.request(method.upper(), route, headers=headers, **({"files": files} if method == "post" else {}))
                    assert resp.status_code == 401, (auth, route, resp.status_code, resp.text)
                    assert resp.json()["error"] == "unauthorized" and resp.headers["www-authenticate"].startswith("Bearer")
            good = {"Authorization": f"Bearer {token}"}
            assert c.post("/review", files=files, headers=good).status_code == 200
            assert c.get("/models", headers=good).json()["bento"] == bento
            for route in ("/readyz", "/healthz", "/metrics", "/openapi.json", "/docs"):
                assert c.get(route).status_code == 200, route
            doc = c.get("/openapi.json").json()
            assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
            assert doc["paths"]["/review"]["post"]["security"] == [{"bearer": []}]
            assert "security" not in doc["paths"]["/readyz"]["get"]
        # two instances of one Bento store keep their own metrics (BentoML wipes a home's metrics dir on start)
        assert "reviewops_rejected_total{" in httpx.get(f"{stack['url']}/metrics", timeout=30).text
    finally:
        stop_all(state)
