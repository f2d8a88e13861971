"""The served contract from the outside: a client generated from ``/openapi.json`` reviews a photo, a
schema-driven fuzzer finds no 5xx and no answer the contract does not allow, and neither do the hostile bodies
such a fuzzer never generates (JSON nested past Python's recursion limit, lone UTF-16 surrogates, dates at the
edge of the calendar).

The tools (openapi-python-client 0.29.x, schemathesis 4.x) run from throw-away venvs (tests/serving/throwaway.py),
never the project's; they talk to the package's deployed stack (tests/serving/conftest.py) over loopback.
``benchmarks/api_fuzz.py`` is the same fuzz at scale (its hooks and NDJSON counting are reused here).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.serving.conftest import photo
from tests.serving.throwaway import install, make_env

PROJECT = Path(__file__).resolve().parents[2]
GENERATOR = "openapi-python-client>=0.29,<0.30"
FUZZER = "schemathesis>=4,<5"
EXAMPLES = 40                      # per operation; hypothesis stops there (plus the coverage phase's cases)
FUZZ_TIMEOUT_S = 240
POST_ROUTES = ("POST /review", "POST /review_batch", "POST /feedback")
pytestmark = pytest.mark.slow


def _api_fuzz():
    spec = importlib.util.spec_from_file_location("api_fuzz", PROJECT / "benchmarks" / "api_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool_envs(tmp_path_factory):
    """One throw-away venv per tool, made on first use and shared by the module's tests."""
    base, made = tmp_path_factory.mktemp("tools"), {}

    def env(name: str, requirement: str) -> Path:
        if name not in made:
            made[name] = make_env(base / name, requirement)
        return made[name]
    return env


# ---------------------------------------------------------------- a generated client

CLIENT_SCRIPT = r'''
import base64, json, sys
from pathlib import Path

package, url, photo_path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
gen = __import__(package, fromlist=["Client"])
from importlib import import_module
review = import_module(f"{package}.api.default.review")
served_models = import_module(f"{package}.api.default.served_models")
models = import_module(f"{package}.models")
File = import_module(f"{package}.types").File

client = gen.Client(base_url=url, timeout=120, raise_on_unexpected_status=True)
out = {}

def answer(resp):
    if not isinstance(resp.parsed, models.ReviewAnswer):
        sys.exit(f"POST /review answered {resp.status_code}: {resp.content[:600]!r} (parsed as {type(resp.parsed).__name__})")
    return resp.parsed.to_dict()

with photo_path.open("rb") as fh:
    out["multipart"] = answer(review.sync_detailed(client=client, body=models.ReviewFilesBody(
        photo=File(payload=fh, file_name=photo_path.name, mime_type="image/jpeg"), listing_id="gen-client-multipart")))
if hasattr(models, "ReviewJSON"):                     # the JSON body, where the generator made a model of it
    out["json"] = answer(review.sync_detailed(client=client, body=models.ReviewJSON(
        photo_b64=base64.b64encode(photo_path.read_bytes()).decode(), listing_id="gen-client-json")))
served = served_models.sync(client=client)
if not isinstance(served, models.ModelsAnswer):
    sys.exit(f"GET /models parsed as {type(served).__name__}")
out["models"] = served.to_dict()
print(json.dumps(out))
'''


def _patch_generator_unset_import(package: Path) -> list[str]:
    """openapi-python-client 0.29 annotates a required body of several media types ``... | Unset = UNSET`` without
    importing ``Unset`` (openapi-generators/openapi-python-client#1451, a generator bug, not the contract's):
    the module then fails at import. Add the import where it is missing; returns the modules patched."""
    patched = []
    for module in sorted((package / "api").rglob("*.py")):
        text = module.read_text()
        if re.search(r"\|\s*Unset\b", text) and not re.search(r"^from \.\.\.types import .*\bUnset\b", text, re.M):
            text = re.sub(r"^(from \.\.\.types import [^\n]*)$", r"\1, Unset", text, count=1, flags=re.M)
            module.write_text(text)
            patched.append(module.name)
    return patched


def test_a_client_generated_from_the_served_contract_reviews_a_photo(stack, client, tool_envs, tmp_path):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200, resp.text[:300]
    contract = resp.json()
    (tmp_path / "openapi.json").write_text(json.dumps(contract))
    env = tool_envs("openapi-python-client", GENERATOR)
    out = tmp_path / "client"
    gen = subprocess.run([str(env / "bin" / "openapi-python-client"), "generate", "--path", str(tmp_path / "openapi.json"),
                          "--output-path", str(out)], capture_output=True, text=True, timeout=300,
                         env={"PATH": f"{env / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)})   # its ruff post-hook
    report = (gen.stdout + gen.stderr).strip()
    print("openapi-python-client:\n" + report)
    assert gen.returncode == 0, f"the generator refused the served contract:\n{report}"
    if "Warning" in report:
        print("GENERATOR WARNINGS (parts of the contract may be missing from the client):\n" + report)
    packages = [p.parent for p in out.glob("*/client.py")]
    assert len(packages) == 1, f"no generated package in {sorted(p.name for p in out.iterdir())}"
    package = packages[0]
    operations = {op["operationId"] for item in contract["paths"].values() for op in item.values()}
    generated = {p.stem for p in (package / "api").rglob("*.py") if p.stem != "__init__"}
    assert operations <= generated, f"the generator skipped operations {sorted(operations - generated)}:\n{report}"
    patched = _patch_generator_unset_import(package)
    if patched:
        print(f"worked around openapi-python-client#1451 (Unset not imported) in {patched}")

    # the package's metadata carries the contract's info.version: it must be a version pip/poetry accept
    project = (out / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]*)"', project, re.M)
    from packaging.version import InvalidVersion, Version
    try:
        valid = bool(Version(declared.group(1) if declared else ""))
    except InvalidVersion:
        valid = False
    if not valid:
        pytest.fail(f"the contract's info.version {contract['info']['version']!r} is no PEP 440 version: the client "
                    "generated from it cannot be installed (poetry-core: InvalidVersionError). info.version is the "
                    "document's version (e.g. '1' or '1.0.0'); the Bento tag belongs in an x- field or the description")
    install(env, str(out))

    script = tmp_path / "use_client.py"
    script.write_text(CLIENT_SCRIPT)
    done = subprocess.run([str(env / "bin" / "python"), str(script), package.name, stack["url"], str(photo(stack, 0))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, f"the generated client failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    got = json.loads(done.stdout.strip().splitlines()[-1])

    served = {family: m["tag"] for family, m in client.get("/models").json()["models"].items()}
    assert {family: m["tag"] for family, m in got["models"]["models"].items()} == served
    forms = [f for f in ("multipart", "json") if f in got]
    assert "multipart" in forms
    print(f"reviewed through the generated client as {forms}")
    for form in forms:
        answer = got[form]
        assert answer["decision"] in ("auto_pass", "manual_review"), (form, answer)
        assert answer["listing_id"] == f"gen-client-{form}"
        assert answer["models"] == served, form
        assert isinstance(answer["policy_version"], str) and answer["policy_version"], form
        assert answer["policy_version"] == got["models"]["policy_version"]


# ---------------------------------------------------------------- a schema-driven fuzz

def _feedback_rows(stack) -> int:
    with sqlite3.connect(stack["repo"] / "monitoring" / "predictions.sqlite", timeout=30) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM feedback").fetchone()[0]


def _forget_feedback(stack, after: int) -> int:
    """Delete the feedback rows stored after row ``after`` (later tests count the table exactly); how many."""
    with sqlite3.connect(stack["repo"] / "monitoring" / "predictions.sqlite", timeout=30) as db:
        return db.execute("DELETE FROM feedback WHERE id > ?", (after,)).rowcount


def test_a_schema_driven_fuzz_finds_no_5xx_and_no_answer_outside_the_contract(stack, client, tool_envs, tmp_path):
    fuzz = _api_fuzz()
    env = tool_envs("schemathesis", FUZZER)
    hooks = tmp_path / "hooks"
    fuzz.write_hooks(hooks)
    photos = [photo(stack, i) for i in range(4)]          # some positive review cases carry one: the 200 is checked too
    ndjson = tmp_path / "fuzz.ndjson"
    cmd = fuzz.st_command(env / "bin" / "schemathesis", stack["url"], examples=EXAMPLES, seed=1, ndjson=ndjson)
    # Bounded by --max-examples and the subprocess timeout: schemathesis 4's --max-time is a budget it spends
    # entirely (the fuzzing phase repeats until it is used up), not a cap.
    feedback_before = _feedback_rows(stack)
    try:
        done = fuzz.run_st(cmd, hooks_dir=hooks, photos=photos, timeout=FUZZ_TIMEOUT_S)
    finally:           # the records the hooks made storable were stored: later tests count the table exactly
        stored = _forget_feedback(stack, feedback_before)
    output = done["output"]
    print(output[-6000:])
    assert not done["timed_out"], f"schemathesis ran past {FUZZ_TIMEOUT_S} s:\n{output[-8000:]}"
    summary = fuzz.summarise(ndjson)
    ops = summary["operations"]
    table = "\n".join(f"  {label:20s} {op['requests']:5d} requests, statuses {op['status']}, failures {op['check_failures']}"
                      for label, op in ops.items())
    print(f"schemathesis {summary.get('schemathesis_version')}, seed 1, {EXAMPLES} examples per operation:\n{table}"
          f"\nfeedback records stored by the fuzz and removed again: {stored}")
    found = "\n".join(f"- {g['operation']} {g['check']}: {g['status']} {g['error']} x{g['count']}, e.g. "
                      f"[{g['request']['description']}] {g['request']['media_type']} {g['request']['body']}"
                      for g in summary["failures"])
    assert done["exit_code"] == 0 and not summary["failures"], \
        f"schemathesis found answers outside the contract:\n{found}\n\n{output[-10000:]}"
    assert summary.get("complete"), f"schemathesis' report is incomplete:\n{output[-4000:]}"
    assert sum(op["server_errors"] for op in ops.values()) == 0, table
    for route in POST_ROUTES:
        assert ops.get(route, {}).get("requests", 0) >= EXAMPLES, f"{route} got too few requests:\n{table}"
    for route in ("POST /review", "POST /review_batch"):           # the real photos reached the models
        assert ops[route]["status"].get("200", 0) > 0, f"no 200 answer of {route} was checked:\n{table}"
    assert client.get("/readyz").status_code == 200


# ---------------------------------------------------------------- what a schema-driven fuzzer does not generate

def test_hostile_bodies_the_fuzzer_does_not_generate_get_a_declared_4xx_not_a_5xx(stack, client):
    """JSON nested deeper than Python's recursion limit, ``\\ud800`` escapes (valid JSON, no valid UTF-8) in text
    fields, and an ISO time whose UTC conversion leaves the calendar: each a declared JSON 4xx (or a 200)."""
    contract = client.get("/openapi.json").json()
    jpeg = base64.b64encode(photo(stack, 1).read_bytes()).decode()
    deep = b"[" * 5000 + b"]" * 5000
    json_type = {"content-type": "application/json"}
    probes = [
        ("/review", deep, "JSON nested 5000 deep"),
        ("/review_batch", deep, "JSON nested 5000 deep"),
        ("/feedback", deep, "JSON nested 5000 deep"),
        ("/review", '{"photo_b64": "%s", "listing_id": "\\ud800"}' % jpeg, "listing_id a lone surrogate"),
        ("/review", '{"photo_b64": "%s", "sku_id": "\\udfff"}' % jpeg, "sku_id a lone surrogate"),
        ("/review_batch", '{"items": [{"photo_b64": "%s", "listing_id": "\\ud800"}]}' % jpeg,
         "batch listing_id a lone surrogate"),
        ("/feedback", '{"listing_id": "\\ud800", "misses": ["blur"]}', "feedback listing_id a lone surrogate"),
        ("/feedback", '{"listing_id": "hostile-1", "misses": ["blur"], "note": "\\udfff"}', "feedback note a lone surrogate"),
        ("/feedback", '{"listing_id": "hostile-2", "misses": ["blur"], "reviewed_at": "0001-01-01T00:00:00+01:00"}',
         "reviewed_at before year 1 in UTC"),
        ("/feedback", '{"listing_id": "hostile-3", "misses": ["blur"], "reviewed_at": "9999-12-31T23:59:59-01:00"}',
         "reviewed_at after year 9999 in UTC"),
    ]
    feedback_before = _feedback_rows(stack)
    wrong = []
    try:
        for route, body, what in probes:
            r = client.post(route, content=body if isinstance(body, bytes) else body.encode(), headers=json_type)
            declared = contract["paths"][route]["post"]["responses"]
            if r.status_code >= 500 or str(r.status_code) not in declared \
                    or not r.headers.get("content-type", "").startswith("application/json"):
                wrong.append(f"POST {route} with {what}: {r.status_code} {r.headers.get('content-type')} {r.text[:120]!r}")
            if r.status_code >= 500:
                # the reviewer closes its connection after an unhandled error; the router's pool may hand that dead
                # connection to the next probe (a 503 upstream_unavailable of its own): let the pool see the close
                time.sleep(0.5)
    finally:
        _forget_feedback(stack, feedback_before)
    assert not wrong, "answers outside the contract:\n" + "\n".join(wrong)
    assert client.get("/readyz").status_code == 200


def test_a_nul_character_in_a_text_field_is_refused_before_anything_is_kept(stack, client):
    """PostgreSQL's text type refuses NUL: such a field would answer but lose its log row there (a 500 on PostgreSQL
    only, found by tests/scaleout). Refused on every route, whatever the log's database, and declared in the contract."""
    contract = client.get("/openapi.json").json()
    jpeg = base64.b64encode(photo(stack, 1).read_bytes()).decode()
    json_type = {"content-type": "application/json"}
    feedback_before = _feedback_rows(stack)
    try:
        for route, body in [("/review", {"photo_b64": jpeg, "listing_id": "nul\u0000id"}),
                            ("/review", {"photo_b64": jpeg, "sku_id": "\u0000"}),
                            ("/review_batch", {"items": [{"photo_b64": jpeg, "category": "phone\u0000"}]}),
                            ("/feedback", {"listing_id": "nul\u0000id", "misses": ["blur"]}),
                            ("/feedback", {"listing_id": "nul-2", "misses": ["blur"], "note": "a\u0000b"})]:
            r = client.post(route, json=body, headers=json_type)
            answer = r.json()
            if route == "/review_batch":
                assert r.status_code == 200 and answer["results"][0]["error"] == "bad_field", answer
            else:
                assert r.status_code in (400, 422) and str(r.status_code) in contract["paths"][route]["post"]["responses"], r.text
        assert _feedback_rows(stack) == feedback_before
    finally:
        _forget_feedback(stack, feedback_before)
