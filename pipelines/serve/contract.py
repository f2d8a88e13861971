"""The reviewer's HTTP contract as an OpenAPI 3.1 document: what ``/openapi.json`` serves and ``/docs`` shows.

The answer's schema is written here once, as pydantic models, and the service's answers are built by
:func:`pipelines.serve.decision.decide`; the tests validate real answers of the running service against
this document, a client generated from it reviews a photo, and ``benchmarks/api_fuzz.py`` fuzzes it. The
document is made per deployment (:func:`openapi_document`): the prohibited categories, the limits and
whether a token is required are the served ones.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Every error code the service answers, with its HTTP status (``{"error": code, "detail": text}``).
ERRORS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the JSON body is not an object"),
    "invalid_json": (400, "the body is not valid JSON"),
    "bad_form": (400, "a form body that does not parse"),
    "bad_multipart": (400, "a multipart body that does not parse (boundary, headers, text not UTF-8)"),
    "bad_batch": (400, "a /review_batch body that is not {\"items\": [...]}"),
    "empty_batch": (400, "a batch without a photo"),
    "missing_field": (400, "the request has no photo"),
    "unknown_field": (400, "a field the contract does not know"),
    "bad_field": (400, "a field of the wrong type or too long"),
    "photo_not_a_file": (400, "the multipart photo field is a text field, not a file part"),
    "too_many_photos": (400, "several photos sent to /review (one photo per request: use /review_batch)"),
    "batch_too_large": (413, "more photos than /review_batch takes"),
    "empty_photo": (400, "a photo of 0 bytes"),
    "bad_base64": (400, "photo_b64 is not base64"),
    "bad_feedback": (400, "feedback that does not follow its schema"),
    "unauthorized": (401, "a token is configured and the request lacks it or carries another"),
    "photo_too_large": (413, "a photo over the upload limit"),
    "request_too_large": (413, "a request over the request limit"),
    "not_an_image": (415, "bytes that are no image"),
    "unsupported_format": (415, "an image format other than JPEG, PNG or WebP"),
    "unsupported_content_type": (415, "a content type other than multipart/form-data, JSON or a form"),
    "photo_too_many_pixels": (422, "width x height over the pixel limit"),
    "photo_too_large_dimensions": (422, "a side over the side limit"),
    "photo_too_small": (422, "a side under the smallest side"),
    "animated_photo": (422, "an animation"),
    "truncated_photo": (422, "a photo cut short"),
    "undecodable_photo": (422, "a photo its decoder refuses"),
    "overloaded": (503, "the models cannot take the photo now: retry after Retry-After seconds"),
}

TOKEN_ENV = "REVIEWOPS_API_TOKEN"   # the optional bearer token of the service (bentos/service.py), also sent by deploy
FAMILIES_NOTE = "present when the family is served (a deployment serves every promoted family)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Field(default=None, max_length=200)


class ErrorAnswer(_Model):
    error: str = Field(description="a stable machine-readable code (see the route's answers)")
    detail: str = Field(description="what is wrong, for a person")


class BatchItemError(ErrorAnswer):
    status: int = Field(description="the HTTP status the photo would have had alone")


Box = Annotated[list[float], Field(min_length=5, max_length=5)]   # [x0, y0, x1, y1, confidence], normalised


class SkuCheck(_Model):
    predicted: str = Field(description="the gallery SKU the photo matches best (its closest gallery photo)")
    similarity: float = Field(description="cosine similarity of the photo to the best gallery photo")
    threshold: float | None = Field(description="similarity of the claimed SKU (without a claim: the best one) at or "
                                                "below which the photo is taken for a product outside the catalogue "
                                                "(unknown_sku); null: uncalibrated")
    claimed: str | None
    claimed_similarity: float | None = Field(description="similarity of the claimed SKU's closest gallery photo; null "
                                                         "without a known claim, or when it is not among the best")
    margin: float | None = Field(description="claimed_similarity minus the best other SKU's; negative: another SKU "
                                             "matches better")
    margin_threshold: float | None = Field(description="margin at or below which the claim is alarmed (sku_mismatch); "
                                                       "null: uncalibrated")
    known_sku: bool = Field(description="the claimed SKU is in the served gallery")
    match: bool | None = Field(description="the photo confirms the claim; null without a claim")


class ScoreCheck(_Model):
    score: float
    threshold: float | None = Field(description="score at or above which the check flags; null: uncalibrated (flags)")
    flag: bool


class StickerCheck(_Model):
    required: bool = Field(description="the category requires anti-tamper stickers")
    missing_score: float
    threshold: float | None
    present: bool
    boxes: list[Box] = Field(description="sticker boxes [x0, y0, x1, y1, confidence], normalised")


class DirtCheck(ScoreCheck):
    boxes: list[Box] = Field(description="dirt boxes at or above the box confidence, [x0, y0, x1, y1, confidence]")


class CentringCheck(_Model):
    offset: list[float] | None = Field(description="[dx, dy] of the product's centre from the photo's, fraction of "
                                                   "the side; null when no product is found")
    cut_by_frame: bool | None = Field(description="the product box touches the frame border; null without a product")
    flag: bool
    product_found: bool
    tolerance: float = Field(description="largest |dx| or |dy| that passes")


class Checks(_Model):
    sku: SkuCheck | None = None
    blur: ScoreCheck | None = None
    sticker: StickerCheck | None = None
    dirt: DirtCheck | None = None
    centering: CentringCheck | None = None
    prohibited: dict[str, ScoreCheck] | None = Field(default=None, description="one entry per served category")
    manipulation: ScoreCheck | None = None


class ReviewAnswer(_Model):
    request_id: str
    listing_id: str | None
    decision: Literal["auto_pass", "manual_review"] = Field(description="auto_pass exactly when reasons is empty")
    reasons: list[str] = Field(description="sku_mismatch, unknown_sku, blur, sticker_missing, dirt, no_product, "
                                           "off_centre, prohibited:<category>, manipulation")
    checks: Checks
    models: dict[str, str] = Field(description="family -> the served model's tag (its version)")
    policy_version: str = Field(description="content hash of the thresholds and decision settings applied")
    gallery_version: str | None = Field(description="content hash of the SKU gallery matched against")


class BatchAnswer(_Model):
    results: list[ReviewAnswer | BatchItemError] = Field(description="one entry per photo, in request order")


# Text fields hold no NUL character: PostgreSQL's text type refuses it, so the log could not keep the answer.
NO_NUL = r"^[^\x00]*$"


class ReviewJSON(_Model):
    photo_b64: str = Field(description="the photo (JPEG, PNG or WebP), base64 (a data: URL prefix is accepted)",
                           json_schema_extra={"contentEncoding": "base64"})
    sku_id: str | None = Field(default=None, max_length=200, pattern=NO_NUL, description="the SKU the listing claims")
    category: str | None = Field(default=None, max_length=200, pattern=NO_NUL,
                                 description="phone, tablet, ...: whether stickers are required")
    listing_id: str | None = Field(default=None, max_length=200, pattern=NO_NUL,
                                   description="echoed in the answer and the log")


class ReviewBatchJSON(_Model):
    items: list[ReviewJSON]


FeedbackText = Field(default=None, max_length=255, pattern=NO_NUL)


class FeedbackRecord(_Model):
    listing_id: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")
    verdicts: dict[str, bool | Literal["confirmed", "false_positive"]] | None = Field(
        default=None, min_length=1,
        description="check (a reason of the answer) -> true: confirmed defect, false: false positive")
    misses: list[str] | None = Field(default=None, min_length=1, description="checks whose defect the reviewer missed")
    request_id: str | None = FeedbackText
    reviewer: str | None = FeedbackText
    reviewed_at: str | None = Field(default=None, description="ISO 8601 with a time zone",
                                    json_schema_extra={"format": "date-time"})
    source: str | None = FeedbackText
    note: str | None = FeedbackText


class FeedbackAnswer(_Model):
    stored: int
    reviews: int
    misses: int


class ServedModel(_Model):
    model_config = ConfigDict(extra="allow")
    tag: str
    metrics: dict = Field(description="the model's figures on the frozen test split, as the gate judged them")
    thresholds: dict | None = None


class ModelsAnswer(_Model):
    models: dict[str, ServedModel]
    policy_version: str
    gallery_version: str | None
    bento: str | None


class Readiness(_Model):
    ready: bool
    reason: str = Field(description="what is not ready, or 'ok'")


SCHEMAS = (ErrorAnswer, BatchItemError, ReviewAnswer, BatchAnswer, ReviewJSON, ReviewBatchJSON, FeedbackRecord,
           FeedbackAnswer, ModelsAnswer, Readiness)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict:
    from pydantic.json_schema import models_json_schema

    _, doc = models_json_schema([(m, "validation") for m in SCHEMAS], ref_template="#/components/schemas/{model}")
    return doc["$defs"]


def _errors(*codes: str) -> dict:
    """Answers by status, each listing its error codes."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERRORS[code][0], []).append(code)
    out = {}
    for status, names in sorted(by_status.items()):
        schema = {"allOf": [_ref("ErrorAnswer"), {"properties": {"error": {"enum": names}}}]}
        out[str(status)] = {"description": "; ".join(f"{c}: {ERRORS[c][1]}" for c in names),
                            "content": {"application/json": {"schema": schema}}}
        if status == 503:
            out[str(status)]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


PHOTO_ERRORS = ("empty_photo", "bad_base64", "photo_too_large", "not_an_image", "unsupported_format",
                "photo_too_many_pixels", "photo_too_large_dimensions", "photo_too_small", "animated_photo",
                "truncated_photo", "undecodable_photo")
REQUEST_ERRORS = ("bad_request", "invalid_json", "bad_form", "bad_multipart", "missing_field", "unknown_field",
                  "bad_field", "photo_not_a_file", "request_too_large", "unsupported_content_type")


def _multipart(batch: bool, max_batch: int = 1) -> dict:
    binary = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    text = {"type": "string", "maxLength": 200, "pattern": NO_NUL}
    fields = {"sku_id": text, "category": text, "listing_id": text}
    if batch:
        props = {"photo": {"type": "array", "items": binary, "minItems": 1, "maxItems": max_batch,
                           "description": "repeated: one file part per photo"},
                 **{k: {"type": "array", "items": text, "description": "repeated, aligned with the photos"}
                    for k in fields}}
    else:
        props = {"photo": {**binary, "description": "the photo as a file part (JPEG, PNG or WebP)"}, **fields}
    return {"schema": {"type": "object", "properties": props, "required": ["photo"], "additionalProperties": False},
            "encoding": {"photo": {"contentType": "image/jpeg, image/png, image/webp, application/octet-stream"}}}


CONTRACT_VERSION = "1.0.0"   # the contract's own version (info.version); the Bento tag is info.x-bento-tag


def _feedback_checks(components: dict, checks: list[str]) -> None:
    """Verdict keys and misses name this deployment's checks. (That a record gives verdicts or misses, or both, is
    said in the description: a record-level anyOf makes openapi-python-client drop the route.)"""
    record = components["FeedbackRecord"]
    record["properties"]["verdicts"]["anyOf"][0]["propertyNames"] = {"enum": checks}
    record["properties"]["misses"]["anyOf"][0]["items"] = {"enum": checks}
    record["description"] = "One listing's outcome: verdicts, misses or both (a record with neither is refused)."


def openapi_document(*, categories: list[str], max_upload_bytes: int, max_pixels: int, max_batch_photos: int,
                     token_required: bool, bento: str | None = None, checks: list[str] | None = None) -> dict:
    """The OpenAPI 3.1 document of this deployment (``checks``: the feedback's check names)."""
    components = _components()
    if checks:
        _feedback_checks(components, checks)
    cats = {c: _ref("ScoreCheck") for c in categories}
    components["Checks"]["properties"]["prohibited"] = {
        "anyOf": [{"type": "object", "properties": cats, "required": list(categories), "additionalProperties": False},
                  {"type": "null"}],
        "description": "one entry per served category"}
    components["ReviewBatchJSON"]["properties"]["items"].update(minItems=1, maxItems=max_batch_photos)
    security = [{"bearer": []}] if token_required else []
    auth = ("unauthorized",) if token_required else ()

    def op(name: str, summary: str, description: str, body: dict | None, ok: dict, *codes: str,
           protected: bool = True) -> dict:
        o = {"operationId": name, "summary": summary, "description": description,
             "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                           **_errors(*codes, *(auth if protected else ()))}}
        if body is not None:
            o["requestBody"] = {"required": True, "content": body}
        if protected:
            o["security"] = security
        return o

    review_body = {"multipart/form-data": _multipart(False), "application/json": {"schema": _ref("ReviewJSON")}}
    batch_body = {"multipart/form-data": _multipart(True, max_batch_photos), "application/json": {"schema": _ref("ReviewBatchJSON")}}
    feedback_body = {"application/json": {"schema": {"anyOf": [_ref("FeedbackRecord"), {
        "type": "array", "items": _ref("FeedbackRecord"), "minItems": 1}]}}}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    paths = {
        "/review": {"post": op(
            "review", "Review one photo",
            f"One photo: multipart (file field `photo`) or JSON (`photo_b64`). At most {max_upload_bytes} bytes and "
            f"{max_pixels} pixels. The answer says auto_pass or manual_review, why, every check's score with the "
            "threshold applied, and the versions that decided.",
            review_body, _ref("ReviewAnswer"), *REQUEST_ERRORS, "too_many_photos", *PHOTO_ERRORS, "overloaded")},
        "/review_batch": {"post": op(
            "review_batch", "Review several photos",
            f"At most {max_batch_photos} photos: JSON `{{\"items\": [...]}}` or multipart with repeated `photo` parts "
            "(and fields aligned with them). A bad photo gets its own error entry; the others are answered.",
            batch_body, _ref("BatchAnswer"), *REQUEST_ERRORS, "bad_batch", "empty_batch", "batch_too_large",
            "overloaded")},
        "/feedback": {"post": op(
            "feedback", "Report manual-review outcomes",
            "Per reason: confirmed or false positive; and defects the reviewer missed. Stored for the false-positive "
            "report and retraining.", feedback_body, _ref("FeedbackAnswer"), "invalid_json", "bad_feedback",
            "request_too_large")},
        "/models": {"get": op("served_models", "The served models", "Every family's served model with its test metrics and "
                              "thresholds, and the policy and gallery versions.", None, _ref("ModelsAnswer"))},
        "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness", "description": "200 when every model process answers and the "
                            "prediction log is writable; 503 with the reason otherwise. Answers within 1 s.",
                            "responses": {"200": {"description": "ready", "content": {"application/json": {
                                "schema": _ref("Readiness")}}},
                                "503": {"description": "not ready", "content": {"application/json": {
                                    "schema": _ref("Readiness")}}}}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness", "description": "200 while the HTTP process runs.",
                             "responses": {"200": {"description": "alive", **text}}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics", "responses": {"200": {"description": "metrics", **text}}}},
    }
    doc = {"openapi": "3.1.0",
           "info": {"title": "ReviewOps reviewer", "version": CONTRACT_VERSION, "x-bento-tag": bento,
                    "description": "Listing-photo review: each photo is auto-passed or sent to a person, with the "
                                   "reasons. Docs: /docs."},
           "paths": paths, "components": {"schemas": components}}
    if token_required:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ReviewOps reviewer: API</title>
<link rel="stylesheet" href="./static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="./static_content/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "./openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""
