"""The combined reviewer as a BentoML service (the serving contract of shared/DESIGN.md).

Two services in one Bento:
- ``Checks`` holds every family's production model (ONNX Runtime) behind one API that batches greedily:
  a lone photo runs at once, photos arriving during a run form the next (:mod:`pipelines.serve.batching`).
- ``Reviewer`` answers HTTP: it validates and decodes the upload (4xx JSON for bad input, never a
  500), asks ``Checks`` for the scores, decides with the thresholds of the registered metadata,
  appends every answer to the prediction log and counts requests per route and decision for
  ``/metrics``.

``/openapi.json`` is the contract (:mod:`pipelines.serve.contract`) and ``/docs`` shows it offline.
``/readyz`` answers within a second (:class:`Front`): 200 when the model worker answers its own
readiness probe and the log is writable, else 503 with the reason. With ``REVIEWOPS_API_TOKEN`` set,
every route but health, readiness, metrics and the contract requires ``Authorization: Bearer <token>``.

``production.json`` (family -> model tag), ``params.yaml`` and ``golden/`` are written beside this
file by ``reviewops build``; the models travel inside the Bento.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from pathlib import Path

import bentoml
from bentoml.exceptions import BentoMLException
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from pipelines.serve.contract import TOKEN_ENV

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("reviewops.service")
PRODUCTION: dict[str, str] = json.loads(Path(os.environ.get("REVIEWOPS_PRODUCTION", HERE / "production.json")).read_text())
PARAMS_PATH = Path(os.environ.get("REVIEWOPS_PARAMS", HERE / "params.yaml"))


def _params():
    from pipelines.params import load_params
    return load_params(PARAMS_PATH)


PARAMS = _params()
SERVING = PARAMS.serving
INPUT_SIZE = PARAMS.data.image_size           # photos reach the models at the data's side
THREADS = int(os.environ.get("REVIEWOPS_THREADS", "2"))
# the checks answer or shed (503) every photo within batch_max_latency_ms plus one run: a call unanswered for twice
# that is lost and is sent again (Reviewer._infer)
INFER_WAIT_S = 2 * SERVING.batch_max_latency_ms / 1000
TOKEN = os.environ.get(TOKEN_ENV) or None
OPEN_PATHS = frozenset({"/readyz", "/healthz", "/livez", "/metrics", "/openapi.json", "/docs"})


def _bundles() -> dict[str, str]:
    return {family: bentoml.models.get(tag).path for family, tag in PRODUCTION.items()}


# runner_connection: BentoML's client of a dependency replaces its aiohttp session every max_requests calls (100 by
# default) or max_age seconds, closing the old one with the calls still in flight on it: at concurrency 32, 1,073 of
# 10,000 calls were cut ("Server disconnected") after the checks had begun them, and ran twice when resent
# (benchmarks/results/scaleout_replicas_resend.json). One session for the process's life instead.
# The checks answer only the HTTP worker, which logs, counts and traces every request itself: their own access log,
# Prometheus middleware and OpenTelemetry span per call cost the model worker 0.6 ms of CPU per photo under load,
# 3% (docs/serving.md#the-model-workers-own-middleware).
@bentoml.service(name="reviewops-checks", workers=1, traffic={"timeout": 120},
                 runner_connection={"max_requests": 2**62, "max_age": 1e12},
                 logging={"access": {"enabled": False}}, metrics={"enabled": False},
                 tracing={"excluded_urls": ["/infer"]})
class Checks:
    """Every production model; ``infer`` runs greedily batched (:class:`pipelines.serve.batching.GreedyBatcher`):
    a lone photo at once, photos that arrive during a run together in the next one."""

    def __init__(self) -> None:
        from pipelines.serve.batching import GreedyBatcher
        from pipelines.serve.models import ReviewerModels

        self.models = ReviewerModels.as_served(_bundles(), PARAMS, threads=THREADS)
        rng = np.random.default_rng(0)
        self.models.infer(rng.integers(0, 255, (2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))  # warm-up
        self.batcher = GreedyBatcher(lambda photos: [json.dumps(r) for r in self.models.infer(photos)],
                                     SERVING.batch_max_size, SERVING.batch_max_latency_ms / 1000)
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api
    async def infer(self, photos: np.ndarray) -> list[str]:
        """uint8 photos [N, 256, 256, 3] -> one JSON object of raw scores per photo."""
        from bentoml.exceptions import ServiceUnavailable

        from pipelines.serve.batching import Overloaded

        try:
            return await self.batcher.submit(photos)
        except Overloaded as exc:
            raise ServiceUnavailable(str(exc)) from None


_READINESS: dict = {}       # the running Reviewer's probe, once it is constructed


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": data})


def _authorized(scope) -> bool:
    """``Authorization: Bearer <token>`` carries the configured token (compared in constant time)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), TOKEN.encode())
    return False


class Front:
    """ASGI middleware in front of every route, BentoML's own included.

    - ``GET /readyz``: BentoML's probe of a dead model worker waits 5 s on a socket nobody accepts; here the
      probe waits ``serving.ready_probe_s`` and answers 503 with the reason, so a load balancer learns the truth.
    - With a token configured, a request to any route outside :data:`OPEN_PATHS` without it gets 401.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/readyz":
                probe = _READINESS.get("probe")
                ready, reason = await probe() if probe else (False, "the reviewer is starting")
                return await _send_json(send, 200 if ready else 503, {"ready": ready, "reason": reason})
            if TOKEN and path not in OPEN_PATHS and not path.startswith("/static_content/") and not _authorized(scope):
                return await _send_json(send, 401, {"error": "unauthorized", "detail": "this route requires "
                                                    "Authorization: Bearer <token>"},
                                        [(b"www-authenticate", b'Bearer realm="reviewops"')])
        await self.app(scope, receive, send)


app = FastAPI(title="ReviewOps reviewer", docs_url=None, redoc_url=None, openapi_url=None)
FIELDS = {"sku_id", "category", "listing_id"}


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


@bentoml.service(name="reviewops-reviewer", workers=1, traffic={"timeout": 120})
@bentoml.asgi_app(app, path="/")
class Reviewer:
    checks = bentoml.depends(Checks)

    def __init__(self) -> None:
        import prometheus_client as prom  # after BentoML set PROMETHEUS_MULTIPROC_DIR

        from monitoring.prediction_log import PredictionLog, resolve_url
        from pipelines.serve.bundle import read_meta
        from monitoring.feedback import known_checks
        from pipelines.serve.contract import openapi_document
        from pipelines.serve.decision import decide, gallery_version, log_record, policy_version
        from pipelines.serve.models import prepare
        from pipelines.serve.photo_input import PhotoError, archive_photo, b64_bytes, decode_photo, missing_field, photo_limits

        self.PhotoError, self.missing_field = PhotoError, missing_field
        self._decode, self._b64_bytes, self._archive_photo = decode_photo, b64_bytes, archive_photo
        self._decide, self._log_record, self._prepare = decide, log_record, prepare
        self.params = PARAMS
        self.limits = photo_limits(self.params)
        bundles = _bundles()
        self.metas = {family: read_meta(Path(path)) for family, path in bundles.items()}
        self.models = {family: {"tag": tag, **_summary(tag)} for family, tag in PRODUCTION.items()}
        self.versions = {family: tag for family, tag in PRODUCTION.items()}
        self.stamp = {"policy_version": policy_version(self.metas), "gallery_version": gallery_version(bundles.get("sku"))}
        self.contract = openapi_document(categories=list(self.metas.get("prohibited", {}).get("thresholds", {})),
                                         max_upload_bytes=SERVING.max_upload_bytes, max_pixels=SERVING.max_pixels,
                                         max_batch_photos=SERVING.max_batch_photos, token_required=TOKEN is not None,
                                         bento=_bento_tag(), checks=known_checks(PARAMS.prohibited.categories))
        root = Path(os.environ.get("REVIEWOPS_ROOT", Path.cwd()))
        self.log = PredictionLog(resolve_url(SERVING.prediction_log, root))
        from monitoring.feedback import FeedbackStore, accept_feedback

        self.feedback, self._accept_feedback = FeedbackStore(resolve_url(SERVING.prediction_log, root)), accept_feedback
        self.archive = (root / SERVING.photo_archive).resolve() if SERVING.photo_archive else None
        self.requests = prom.Counter("reviewops_reviews", "Photos answered, by route and decision",
                                     ["route", "decision"])
        self.errors = prom.Counter("reviewops_rejected", "Requests refused with a 4xx, by route and error",
                                   ["route", "error"])
        self.latency = prom.Histogram("reviewops_review_seconds", "Latency of answered requests, by route and decision",
                                      ["route", "decision"],
                                      buckets=(.025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10))
        _READINESS["probe"] = self.readiness

    async def readiness(self) -> tuple[bool, str]:
        """(ready, reason) within ``serving.ready_probe_s`` (plus the log's ping): the model worker's own /readyz."""
        probe = getattr(self.checks, "is_ready", None)
        if probe is not None:
            wait = SERVING.ready_probe_s
            try:
                ok = await asyncio.wait_for(probe(wait), timeout=wait)
            except asyncio.TimeoutError:
                return False, f"the model worker did not answer within {wait:g} s (down, restarting or starting)"
            except Exception as exc:                        # refused connection, reset socket: the worker is down
                return False, f"the model worker is unreachable ({type(exc).__name__})"
            if not ok:
                return False, "the model worker is not ready (loading its models)"
        if not await asyncio.to_thread(self.log.ping):
            return False, "the prediction log is not writable"
        return True, "ok"

    # --- parsing ---------------------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        limit = SERVING.max_upload_bytes * SERVING.max_batch_photos + 1_000_000
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self.PhotoError(413, "request_too_large", f"the request has {int(declared)} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self.PhotoError(413, "request_too_large", f"the request exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _fields(self, item: dict, where: str) -> dict:
        unknown = set(item) - FIELDS - {"photo", "photo_b64"}
        if unknown:
            raise self.PhotoError(400, "unknown_field", f"{where}: unknown field(s) {sorted(unknown)}; "
                                  f"expected photo (file) or photo_b64, and optional {sorted(FIELDS)}")
        out = {}
        for name in FIELDS:
            value = item.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 200 or not _storable(value)):
                raise self.PhotoError(400, "bad_field", f"{where}: {name} must be a string of at most 200 characters "
                                      "(valid Unicode: no lone surrogate, no NUL character)")
            out[name] = value or None
        return out

    async def _items(self, request: Request, batch: bool) -> list[dict | Exception]:
        """Each photo of the request as {"rgb", "sku_id", "category", "listing_id"}, or its PhotoError."""
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()          # media types are case-insensitive (RFC 9110)
        body = await self._body(request)
        if media == "multipart/form-data":
            return self._multipart(ctype, body, batch)
        if media == "application/json" or not media:
            try:
                doc = json.loads(body or b"null")
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:   # RecursionError: nested too deep
                raise self.PhotoError(400, "invalid_json", f"the body is not valid JSON: {str(exc)[:200]}") from None
            if batch:
                if not isinstance(doc, dict) or not isinstance(doc.get("items"), list) or set(doc) != {"items"}:
                    raise self.PhotoError(400, "bad_batch", 'expected {"items": [{"photo_b64": ..., "sku_id": ...}, ...]}')
                docs = doc["items"]
            else:
                if not isinstance(doc, dict):
                    raise self.PhotoError(400, "bad_request", 'expected a JSON object {"photo_b64": ..., "sku_id": ...}')
                docs = [doc]
            return [self._from_json(d, i, batch) for i, d in enumerate(docs)]
        if media == "application/x-www-form-urlencoded":     # a plain HTML form: fields, photo_b64 or none
            from urllib.parse import parse_qsl

            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
            except (ValueError, UnicodeDecodeError) as exc:
                raise self.PhotoError(400, "bad_form", f"the form body is not valid: {exc}") from None
            if batch:
                raise self.PhotoError(400, "bad_batch", "/review_batch takes JSON {\"items\": [...]} or multipart photos")
            if "photo_b64" not in form and "photo" not in form:
                raise self.missing_field("photo")
            return [self._from_json(form, 0, batch)]
        raise self.PhotoError(415, "unsupported_content_type",
                              f"content type {ctype!r}: send multipart/form-data (field photo) or JSON (photo_b64)")

    def _from_json(self, doc, i: int, batch: bool) -> dict | Exception:
        where = f"items[{i}]" if batch else "request"
        try:
            if not isinstance(doc, dict):
                raise self.PhotoError(400, "bad_request", f"{where} must be a JSON object")
            fields = self._fields(doc, where)
            text = doc.get("photo_b64", doc.get("photo"))
            if text is None:
                raise self.missing_field("photo_b64")
            if not isinstance(text, str):
                raise self.PhotoError(400, "bad_field", f"{where}: photo_b64 must be a base64 string")
            data = self._b64_bytes(text, max_bytes=self.limits["max_bytes"])
            return {"rgb": self._decode(data, **self.limits), "data": data, **fields}
        except self.PhotoError as exc:
            if not batch:
                raise
            return exc

    def _multipart(self, ctype: str, body: bytes, batch: bool) -> list[dict | Exception]:
        from pipelines.serve.multipart import parse_multipart

        parts = parse_multipart(ctype, body)
        if any(p.name == "photo" and p.filename is None for p in parts):
            raise self.PhotoError(400, "photo_not_a_file", "the photo field is a text field: send the photo as a file "
                                  'part (Content-Disposition: form-data; name="photo"; filename="...")')
        files = [p for p in parts if p.filename is not None]
        values = {p.name: p.text() for p in parts if p.filename is None}
        unknown = {p.name for p in files if p.name != "photo"} | (set(values) - FIELDS)
        if unknown:
            raise self.PhotoError(400, "unknown_field", f"unknown field(s) {sorted(unknown)}; expected the file "
                                  f"field photo and optional {sorted(FIELDS)}")
        if not files:
            raise self.missing_field("photo")
        if not batch and len(files) > 1:
            raise self.PhotoError(400, "too_many_photos", "POST /review takes one photo; use /review_batch")
        listed = {k: [p.text() for p in parts if p.filename is None and p.name == k] for k in FIELDS}
        items: list[dict | Exception] = []
        for i, part in enumerate(files):
            try:
                fields = {k: (v[i] if len(v) == len(files) else (v[0] if len(v) == 1 and not batch else None)) or None
                          for k, v in listed.items()}
                items.append({"rgb": self._decode(part.data, **self.limits), "data": part.data, **fields})
            except self.PhotoError as exc:
                if not batch:
                    raise
                items.append(exc)
        return items

    # --- answering -------------------------------------------------------------------------------

    async def _answer(self, route: str, items: list, smoke: bool = False) -> list[dict]:
        started = time.perf_counter()
        good = [it for it in items if isinstance(it, dict)]
        raws = []
        if good:
            photos = np.stack([self._prepare(it["rgb"], INPUT_SIZE) for it in good])
            raws = [json.loads(r) for r in await self._infer(photos)]
        answers, records, it_raw = [], [], iter(raws)
        latency_ms = (time.perf_counter() - started) * 1000
        for item in items:
            if not isinstance(item, dict):
                answers.append({"error": item.code, "detail": item.message, "status": item.status})
                self.errors.labels(route, item.code).inc()
                continue
            raw = next(it_raw)
            answer = {"request_id": ("smoke-" if smoke else "") + uuid.uuid4().hex, "listing_id": item["listing_id"],
                      **self._decide(raw, self.metas, sku_id=item["sku_id"], category=item["category"]),
                      "models": self.versions, **self.stamp}
            answers.append(answer)
            records.append(self._log_record(answer, raw, listing_id=item["listing_id"], models=self.versions,
                                            latency_ms=latency_ms))
        if records:
            await asyncio.to_thread(self._keep, [it for it in items if isinstance(it, dict)], records)
        elapsed = time.perf_counter() - started
        for answer in answers:
            if "decision" in answer:
                self.requests.labels(route, answer["decision"]).inc()
                self.latency.labels(route, answer["decision"]).observe(elapsed)
        return answers

    async def _infer(self, photos: np.ndarray) -> list[str]:
        """The checks' scores. A call the checks process dropped, or left unanswered past ``INFER_WAIT_S``, is sent
        once more (inference is pure); a second failure is a 503 (``ServiceUnavailable``), never a hang.

        Dropped shows as aiohttp's ServerDisconnectedError or ClientOSError before the answer, or, while its body is
        read, as ClientPayloadError or ``RuntimeError("Connection closed.")``; unanswered: about 1 call in 10,000 at
        concurrency 32 waited for BentoML's 120 s timeout although the checks had answered it (both seen in
        benchmarks/scaleout_replicas.py).
        """
        import aiohttp
        from bentoml.exceptions import ServiceUnavailable

        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(self.checks.to_async.infer(photos), INFER_WAIT_S)
            except (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                    aiohttp.ClientPayloadError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and str(exc) != "Connection closed.":
                    raise
                what = f"no answer within {INFER_WAIT_S:g} s" if isinstance(exc, asyncio.TimeoutError) else repr(exc)
                if attempt == 2:
                    raise ServiceUnavailable(f"the checks failed twice: {what}") from None
                logger.warning("the checks call failed (%s): sending it once more", what)
        raise AssertionError("unreachable")

    def _keep(self, items: list[dict], records: list[dict]) -> None:
        """Archive the photos (named by SHA-256, so a resent photo is stored once) and append the log rows."""
        if self.archive is not None:
            for item, record in zip(items, records):
                record["image_path"] = str(self._archive_photo(item["data"], self.archive))
        self.log.append(records)

    async def _handle(self, route: str, request: Request, batch: bool) -> JSONResponse:
        try:
            items = await self._items(request, batch)
            if batch and len(items) > SERVING.max_batch_photos:
                raise self.PhotoError(413, "batch_too_large", f"{len(items)} photos; the limit is {SERVING.max_batch_photos}")
            if batch and not items:
                raise self.PhotoError(400, "empty_batch", "the batch has no photo")
        except self.PhotoError as exc:
            self.errors.labels(route, exc.code).inc()
            return JSONResponse(exc.to_json(), status_code=exc.status)
        try:
            answers = await self._answer(route, items, smoke=request.headers.get("x-reviewops-smoke") == "1")
        except BentoMLException as exc:                          # the checks shed load or are restarting: retry later
            self.errors.labels(route, "overloaded").inc()
            return JSONResponse({"error": "overloaded", "detail": f"the models cannot take this photo now ({exc.message}); "
                                 "retry shortly"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"results": answers} if batch else answers[0])

    @app.post("/review")
    async def review(self, request: Request) -> JSONResponse:
        """One photo: multipart (file field ``photo``) or JSON ``{"photo_b64": ...}``, optional sku_id, category, listing_id."""
        return await self._handle("/review", request, batch=False)

    @app.post("/review_batch")
    async def review_batch(self, request: Request) -> JSONResponse:
        """Many photos: JSON ``{"items": [...]}`` or multipart with repeated ``photo`` (and aligned fields)."""
        return await self._handle("/review_batch", request, batch=True)

    @app.post("/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        """Manual-review outcomes (per reason: confirmed or not) and later-reported misses, as JSON; 400 names the bad field."""
        try:
            body = await self._body(request)
        except self.PhotoError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status)
        status, answer = await asyncio.to_thread(self._accept_feedback, body, self.feedback,
                                                 self.params.prohibited.categories)
        if status >= 400:
            self.errors.labels("/feedback", answer.get("error", "bad_feedback")).inc()
        return JSONResponse(answer, status_code=status)

    @app.get("/models")
    async def served_models(self) -> dict:
        """The served model of every family: tag, test metrics, thresholds, data version, git revision; the versions."""
        return {"models": self.models, **self.stamp, "bento": os.environ.get("BENTOML_BENTO_TAG") or _bento_tag()}

    @app.get("/openapi.json")
    async def openapi(self) -> JSONResponse:
        """The contract of this deployment (OpenAPI 3.1)."""
        return JSONResponse(self.contract)

    @app.get("/docs")
    async def docs(self) -> HTMLResponse:
        """The contract as a page (Swagger UI from the Bento's own static files: works offline)."""
        from pipelines.serve.contract import DOCS_PAGE

        return HTMLResponse(DOCS_PAGE)


Reviewer.add_asgi_middleware(Front)


def _storable(text: str) -> bool:
    """The text encodes as UTF-8 (JSON's \\ud800 escapes decode to lone surrogates, which do not) and holds no NUL
    (PostgreSQL's text type refuses it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _summary(tag: str) -> dict:
    meta = dict(bentoml.models.get(tag).info.metadata)
    return {k: meta.get(k) for k in ("metrics", "thresholds", "data_version", "git_revision", "params_hash",
                                     "content_hash", "registered_at", "onnx_parity_max_abs_diff")}


def _bento_tag() -> str | None:
    path = HERE.parent / "bento.yaml"
    if path.exists():
        import yaml
        doc = yaml.safe_load(path.read_text())
        return f"{doc['name']}:{doc['version']}"
    return None
