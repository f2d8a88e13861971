"""Manual-review outcomes and after-sales misses: the ``feedback`` table beside the prediction log.

What comes back, per listing: the reviewer's verdict on each reason the reviewer flagged
(``true``: the defect is there, confirmed; ``false``: a false positive), and later the misses, a
defect found after the listing was published (an after-sales complaint) that no check flagged.

JSON (``POST /feedback`` on the service; one object or a list of them)::

    {"listing_id": "L1", "verdicts": {"blur": true, "prohibited:cash": false},
     "reviewer": "r17", "reviewed_at": "2026-01-05T10:31:00Z", "request_id": "...", "note": "..."}
    {"listing_id": "L9", "misses": ["dirt"], "source": "after_sales", "note": "buyer complaint #4411"}

CSV (``reviewops feedback FILE.csv``), one row per listing and check::

    listing_id,check,verdict,reviewer,reviewed_at,request_id,note
    L1,blur,confirmed,r17,2026-01-05T10:31:00Z,,
    L1,prohibited:cash,false_positive,r17,,,
    L9,dirt,missed,,,,buyer complaint #4411

Checks are the reasons of the served answer: sku_mismatch, unknown_sku, blur, sticker_missing,
dirt, no_product, off_centre, manipulation and prohibited:<category>. Bad input raises
``FeedbackError`` with a message naming the field (and the CSV line); nothing is stored then.
Rows are appended (never updated); the report reads the latest verdict per listing and check.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from .prediction_log import UTCDateTime, ddl_lock, make_engine, sqlite_path

# the reasons pipelines.serve.models.decide can give (prohibited:<category> besides)
CHECKS = ("sku_mismatch", "unknown_sku", "blur", "sticker_missing", "dirt", "no_product", "off_centre", "manipulation")
VERDICTS = {"confirmed": True, "false_positive": False}
MISSED = "missed"
KINDS = ("review", "miss")
MAX_TEXT = 255
MAX_ITEMS = 1000           # records in one POST
MAX_CSV_ERRORS = 10        # errors listed before the import gives up
JSON_KEYS = {"listing_id", "request_id", "verdicts", "misses", "reviewer", "reviewed_at", "source", "note"}
CSV_REQUIRED = ("listing_id", "check", "verdict")
CSV_OPTIONAL = ("reviewer", "reviewed_at", "request_id", "note", "source")


class FeedbackError(ValueError):
    """Feedback that cannot be stored: the message says which field is wrong and what is expected."""


metadata = sa.MetaData()
feedback_table = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received", UTCDateTime, nullable=False, index=True),
    sa.Column("listing_id", sa.String(MAX_TEXT), nullable=False, index=True),
    sa.Column("check", sa.String(MAX_TEXT), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),             # review | miss
    sa.Column("confirmed", sa.Boolean, nullable=False),           # review: defect there (True) or false positive
    sa.Column("request_id", sa.String(MAX_TEXT)),
    sa.Column("reviewer", sa.String(MAX_TEXT)),
    sa.Column("reviewed_at", UTCDateTime),
    sa.Column("source", sa.String(MAX_TEXT), nullable=False),     # api | csv | after_sales | simulated ...
    sa.Column("note", sa.Text),
)
COLUMNS = tuple(c.name for c in feedback_table.columns if c.name != "id")


@dataclass
class Feedback:
    listing_id: str
    check: str
    kind: str                     # review | miss
    confirmed: bool
    request_id: str | None = None
    reviewer: str | None = None
    reviewed_at: dt.datetime | None = None
    source: str = "api"
    note: str | None = None


def known_checks(categories: Sequence[str]) -> list[str]:
    return [*CHECKS, *(f"prohibited:{c}" for c in categories)]


def _categories(categories: Sequence[str] | None) -> list[str]:
    if categories is not None:
        return list(categories)
    from pipelines.params import load_params

    return list(load_params().prohibited.categories)


def _text(value: Any, where: str, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise FeedbackError(f"{where} is required (a non-empty string)")
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise FeedbackError(f"{where} must be a string of at most {MAX_TEXT} characters, not {value!r:.80}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FeedbackError(f"{where} is not valid Unicode (a lone surrogate): {value!r:.80}") from None
    if "\x00" in value:                    # PostgreSQL's text type refuses it: the row could not be kept
        raise FeedbackError(f"{where} holds a NUL character: {value!r:.80}")
    return value.strip()


def _time(value: Any, where: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FeedbackError(f"{where} must be an ISO 8601 time string (e.g. 2026-01-05T10:31:00Z), not {value!r:.80}")
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FeedbackError(f"{where} must be an ISO 8601 time (e.g. 2026-01-05T10:31:00Z), not {value!r:.80}") from None
    if parsed.tzinfo is None:
        raise FeedbackError(f"{where} must carry a time zone (e.g. 2026-01-05T10:31:00Z), not {value!r:.80}")
    try:
        return parsed.astimezone(dt.timezone.utc)
    except OverflowError:                                    # year 1 or 9999 shifted past the calendar
        raise FeedbackError(f"{where} is out of range: {value!r:.80}") from None


def _check(value: Any, where: str, checks: Sequence[str]) -> str:
    if not isinstance(value, str) or value.strip() not in checks:
        raise FeedbackError(f"{where}: unknown check {value!r:.80}; known: {', '.join(checks)}")
    return value.strip()


def _one(payload: Any, where: str, checks: Sequence[str], source: str) -> list[Feedback]:
    if not isinstance(payload, dict):
        raise FeedbackError(f"{where} must be a JSON object with listing_id and verdicts and/or misses")
    unknown = sorted(set(payload) - JSON_KEYS)
    if unknown:
        raise FeedbackError(f"{where}: unknown field(s) {unknown}; expected {sorted(JSON_KEYS)}")
    listing = _text(payload.get("listing_id"), f"{where}.listing_id", required=True)
    common = {"request_id": _text(payload.get("request_id"), f"{where}.request_id"),
              "reviewer": _text(payload.get("reviewer"), f"{where}.reviewer"),
              "reviewed_at": _time(payload.get("reviewed_at"), f"{where}.reviewed_at"),
              "source": _text(payload.get("source"), f"{where}.source") or source,
              "note": _text(payload.get("note"), f"{where}.note")}
    verdicts, misses = payload.get("verdicts"), payload.get("misses")
    if verdicts is None and misses is None:
        raise FeedbackError(f"{where}: give verdicts (check -> true/false) and/or misses (a list of checks)")
    rows = []
    if verdicts is not None:
        if not isinstance(verdicts, dict) or not verdicts:
            raise FeedbackError(f"{where}.verdicts must be a non-empty object of check -> true (confirmed defect) "
                                "or false (false positive)")
        for name, verdict in verdicts.items():
            check = _check(name, f"{where}.verdicts", checks)
            if isinstance(verdict, str) and verdict in VERDICTS:
                verdict = VERDICTS[verdict]
            if not isinstance(verdict, bool):
                raise FeedbackError(f"{where}.verdicts[{name!r}] must be true (confirmed defect) or false (false "
                                    f"positive), not {verdict!r:.80}")
            rows.append(Feedback(listing, check, "review", verdict, **common))
    if misses is not None:
        if not isinstance(misses, list) or not misses:
            raise FeedbackError(f"{where}.misses must be a non-empty list of checks, e.g. [\"dirt\"]")
        rows += [Feedback(listing, _check(m, f"{where}.misses", checks), "miss", True, **common) for m in misses]
    return rows


def parse_feedback(payload: Any, categories: Sequence[str] | None = None, source: str = "api") -> list[Feedback]:
    """Validate one JSON feedback object (or a list of them); FeedbackError says what is wrong."""
    checks = known_checks(_categories(categories))
    if isinstance(payload, list):
        if not payload:
            raise FeedbackError("the list of feedback records is empty")
        if len(payload) > MAX_ITEMS:
            raise FeedbackError(f"{len(payload)} feedback records; at most {MAX_ITEMS} per request")
        return [row for i, item in enumerate(payload) for row in _one(item, f"feedback[{i}]", checks, source)]
    return _one(payload, "feedback", checks, source)


def parse_csv(text: str, categories: Sequence[str] | None = None, source: str = "csv") -> list[Feedback]:
    """Validate a feedback CSV (header: listing_id,check,verdict[,reviewer,reviewed_at,request_id,note,source])."""
    checks = known_checks(_categories(categories))
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise FeedbackError(f"the CSV header lacks {missing}: expected {','.join(CSV_REQUIRED + CSV_OPTIONAL)} "
                            f"(got {','.join(header) or 'an empty file'})")
    unknown = [h for h in header if h not in CSV_REQUIRED + CSV_OPTIONAL]
    if unknown:
        raise FeedbackError(f"unknown CSV column(s) {unknown}; expected {','.join(CSV_REQUIRED + CSV_OPTIONAL)}")
    rows, errors = [], []
    for line, raw in enumerate(reader, start=2):
        record = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
        if None in raw:
            errors.append(f"line {line}: more fields than the header has")
            continue
        try:
            where = f"line {line}"
            verdict = record.get("verdict") or ""
            if verdict not in (*VERDICTS, MISSED):
                raise FeedbackError(f"{where}: verdict must be confirmed, false_positive or missed, not {verdict!r:.80}")
            rows.append(Feedback(
                _text(record.get("listing_id"), f"{where}: listing_id", required=True),
                _check(record.get("check"), where, checks),
                "miss" if verdict == MISSED else "review", VERDICTS.get(verdict, True),
                _text(record.get("request_id"), f"{where}: request_id"), _text(record.get("reviewer"), f"{where}: reviewer"),
                _time(record.get("reviewed_at"), f"{where}: reviewed_at"),
                _text(record.get("source"), f"{where}: source") or source, _text(record.get("note"), f"{where}: note")))
        except FeedbackError as exc:
            errors.append(str(exc))
        if len(errors) >= MAX_CSV_ERRORS:
            break
    if errors:
        raise FeedbackError(f"{len(errors)} bad row(s), nothing imported:\n  " + "\n  ".join(errors))
    if not rows:
        raise FeedbackError("the CSV has a header but no rows")
    return rows


class FeedbackStore:
    """The ``feedback`` table in any SQLAlchemy database (the prediction log's by default)."""

    def __init__(self, url: str):
        parsed = sa.make_url(url)
        path = sqlite_path(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(parsed)
        with self.engine.begin() as conn:          # under the log's DDL lock on PostgreSQL (replicas start together)
            ddl_lock(conn)
            conn.execute(sa.schema.CreateTable(feedback_table, if_not_exists=True))
            for index in feedback_table.indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))

    def add(self, rows: Iterable[Feedback], received: dt.datetime | None = None) -> int:
        """Append ``rows`` in one transaction; returns how many."""
        now = (received or dt.datetime.now(dt.timezone.utc))
        values = [{**asdict(r), "received": now} for r in rows]
        if values:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(feedback_table), values)
        return len(values)

    def read(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*(feedback_table.c[c] for c in COLUMNS)).order_by(feedback_table.c.id)).all()
        frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
        for column in ("received", "reviewed_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        frame["confirmed"] = frame["confirmed"].astype(bool)
        return frame

    def close(self) -> None:
        self.engine.dispose()


def store_url(root: str | Path, params=None) -> str:
    """The feedback store's URL: the prediction log's ($REVIEWOPS_PREDICTION_LOG, else serving.prediction_log)."""
    from pipelines.params import load_params

    from .prediction_log import resolve_url

    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    return resolve_url(params.serving.prediction_log, root)


def accept_feedback(body: bytes | str, store: FeedbackStore, categories: Sequence[str], source: str = "api") -> tuple[int, dict]:
    """What ``POST /feedback`` answers: (HTTP status, JSON body). 200 {"stored": n}; 400 with error and detail."""
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:     # RecursionError: nested too deep
        return 400, {"error": "invalid_json", "detail": f"the body is not valid JSON: {str(exc)[:200]}"}
    try:
        rows = parse_feedback(payload, categories, source=source)
    except FeedbackError as exc:
        return 400, {"error": "bad_feedback", "detail": str(exc)}
    n = store.add(rows)
    return 200, {"stored": n, "reviews": sum(r.kind == "review" for r in rows), "misses": sum(r.kind == "miss" for r in rows)}


def import_csv(root: str | Path, path: str | Path, params=None, source: str = "csv") -> int:
    """Validate and store a feedback CSV (all rows or none); returns the rows stored."""
    from pipelines.params import load_params

    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    rows = parse_csv(Path(path).read_text(), params.prohibited.categories, source=source)
    store = FeedbackStore(store_url(root, params))
    try:
        return store.add(rows)
    finally:
        store.close()


# --- simulated reviewers: verdicts from the generator's ground truth -------------------------------------------

def truth(check: str, row: pd.Series) -> bool:
    """Whether the photo of manifest ``row`` really has the defect ``check`` flags (the generator's labels)."""
    if check in ("sku_mismatch", "unknown_sku"):
        return bool(row.get("new_sku")) or (row.get("claimed_sku") != row.get("sku_id"))
    if check == "blur":
        return bool(row.get("blurred"))
    if check == "no_product":
        return row.get("category") == "none"
    if check.startswith("prohibited:"):
        shown = row.get("prohibited")
        return check.split(":", 1)[1] in (list(shown) if shown is not None else [])
    if check == "manipulation":
        return bool(row.get("manipulated"))
    if check in ("sticker_missing", "dirt", "off_centre"):
        return bool(row.get(check))
    raise ValueError(f"unknown check {check!r}")


def simulate_feedback(manifest: pd.DataFrame, predictions: pd.DataFrame, categories: Sequence[str],
                      review_share: float = 1.0, miss_share: float = 1.0, seed: int = 0,
                      reviewer: str = "simulated") -> pd.DataFrame:
    """Feedback CSV rows a reviewer and after-sales would send for logged ``predictions`` of ``manifest``'s photos.

    Each flagged reason of a reviewed listing (``review_share`` of the manual-review listings) gets
    confirmed or false_positive from the ground truth; each true defect of an auto-passed listing is
    reported as missed with probability ``miss_share``. Listings join on ``listing_id``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    truth_rows = manifest.set_index("listing_id")
    checks = [c for c in known_checks(categories) if c != "unknown_sku"]   # a miss is reported once for the SKU
    out = []
    latest = predictions[~predictions["request_id"].astype(str).str.startswith("smoke-")]
    latest = latest.dropna(subset=["listing_id"]).drop_duplicates("listing_id", keep="last")
    for _, pred in latest.iterrows():
        if pred["listing_id"] not in truth_rows.index:
            continue
        row = truth_rows.loc[pred["listing_id"]]
        reviewed_at = (pd.Timestamp(pred["ts"]) + pd.Timedelta(hours=2)).isoformat()
        if pred["decision"] == "manual_review":
            if rng.random() >= review_share:
                continue
            for reason in pred["reasons"]:
                out.append({"listing_id": pred["listing_id"], "check": reason,
                            "verdict": "confirmed" if truth(reason, row) else "false_positive",
                            "reviewer": reviewer, "reviewed_at": reviewed_at, "request_id": pred["request_id"],
                            "note": "", "source": "simulated-review"})
        else:
            for check in checks:
                if truth(check, row) and rng.random() < miss_share:
                    out.append({"listing_id": pred["listing_id"], "check": check, "verdict": MISSED, "reviewer": "",
                                "reviewed_at": "", "request_id": pred["request_id"], "note": "after-sales complaint",
                                "source": "simulated-after-sales"})
    return pd.DataFrame(out, columns=[*CSV_REQUIRED, *CSV_OPTIONAL])


__all__ = ["CHECKS", "Feedback", "FeedbackError", "FeedbackStore", "accept_feedback", "import_csv", "known_checks",
           "parse_csv", "parse_feedback", "simulate_feedback", "store_url", "truth"]
