"""The prediction log: one row per answered photo, in any SQLAlchemy database (SQLite unless configured).

Besides the decision and the full per-check JSON, every row has flat score columns, the ones the drift monitor
reads. SQLite runs in WAL mode with a busy timeout, so several server worker processes append side by side.
PostgreSQL (``postgresql+psycopg://``) takes the writers of several replicas: the table is created under an
advisory lock (replicas starting together do not race on ``CREATE TABLE IF NOT EXISTS``), and ``request_id``
is unique, so an append retried after a dropped connection (its commit unknown) writes each row once.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

ENV_VAR = "REVIEWOPS_PREDICTION_LOG"        # overrides params.serving.prediction_log
SQLITE_BUSY_TIMEOUT_MS = 30_000             # how long an append waits for another process's write to finish
APPEND_ATTEMPTS = 3                         # an append whose connection failed is retried (idempotent: request_id)
DDL_LOCK = 0x5245564F                       # PostgreSQL advisory lock key held while the tables are created
UNIQUE_REQUEST_ID = "ux_predictions_request_id"
MAX_TEXT = 255
MAX_PATH = 1024
TEXTS = ("listing_id", "sku_claimed", "sku_predicted", "policy_version", "gallery_version")
SCORES = ("blur_score", "sku_similarity", "sticker_missing_score", "dirt_score", "centring_offset",
          "manipulation_score", "prohibited_max", "latency_ms")
REQUIRED = ("request_id", "decision")


class UTCDateTime(sa.types.TypeDecorator):
    """An aware datetime, stored as naive UTC (the same in every database) and read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


metadata = sa.MetaData()
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", UTCDateTime, nullable=False, index=True),
    sa.Column("request_id", sa.String(MAX_TEXT), nullable=False),
    sa.Column("listing_id", sa.String(MAX_TEXT)),
    sa.Column("decision", sa.String(MAX_TEXT), nullable=False),
    sa.Column("reasons", _json(), nullable=False),
    sa.Column("models", _json(), nullable=False),      # family -> served model tag
    sa.Column("policy_version", sa.String(MAX_TEXT)),  # content hash of the thresholds and decision settings
    sa.Column("gallery_version", sa.String(MAX_TEXT)), # content hash of the SKU gallery
    sa.Column("blur_score", sa.Float),
    sa.Column("sku_claimed", sa.String(MAX_TEXT)),
    sa.Column("sku_predicted", sa.String(MAX_TEXT)),
    sa.Column("sku_similarity", sa.Float),
    sa.Column("sku_match", sa.Boolean),
    sa.Column("sticker_missing_score", sa.Float),
    sa.Column("dirt_score", sa.Float),
    sa.Column("centring_offset", sa.Float),          # magnitude of the product-centre offset, fraction of the side
    sa.Column("manipulation_score", sa.Float),
    sa.Column("prohibited", _json()),                 # category -> probability
    sa.Column("prohibited_max", sa.Float),
    sa.Column("latency_ms", sa.Float),
    sa.Column("checks", _json(), nullable=False),     # the per-check JSON exactly as served
    sa.Column("image_path", sa.String(MAX_PATH)),     # the archived photo (serving.photo_archive), if kept
)
unique_request_id = sa.Index(UNIQUE_REQUEST_ID, predictions.c.request_id, unique=True)   # created apart: see _unique
COLUMNS = tuple(c.name for c in predictions.columns if c.name != "id")


def resolve_url(url: str, root: Path) -> str:
    """The log's URL: $REVIEWOPS_PREDICTION_LOG, else ``url``; a relative SQLite path is made absolute under ``root``."""
    parsed = sa.make_url(os.environ.get(ENV_VAR) or url)
    path = sqlite_path(parsed)
    if path is not None and not path.is_absolute():
        parsed = parsed.set(database=str(Path(root).resolve() / path))
    return parsed.render_as_string(hide_password=False)


class PredictionLog:
    """Append and read prediction records; the ``predictions`` table is created if missing."""

    def __init__(self, url: str):
        parsed = sa.make_url(url)
        path = sqlite_path(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(parsed)
        with self.engine.begin() as conn:          # IF NOT EXISTS: workers starting together do not collide
            ddl_lock(conn)
            conn.execute(sa.schema.CreateTable(predictions, if_not_exists=True))
            for index in predictions.indexes:
                if index is not unique_request_id:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            _add_missing_columns(conn)
            self.unique = _unique(conn)
        self._insert = _idempotent_insert(self.engine.dialect.name) if self.unique else sa.insert(predictions)

    def append(self, records: Sequence[dict[str, Any]]) -> int:
        """Write ``records`` in one transaction; a ValueError naming the key if any is invalid (then none is written).

        A row whose ``request_id`` is already in the log is not written again (the append is idempotent), so a
        connection that failed mid-append is retried (up to ``APPEND_ATTEMPTS``) without duplicating rows.
        """
        rows = [_row(record) for record in records]
        if rows:
            for attempt in range(1, APPEND_ATTEMPTS + 1):
                try:
                    with self.engine.begin() as conn:
                        conn.execute(self._insert, rows)
                    break
                except sa.exc.DBAPIError as exc:
                    if not (exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError)) \
                            or not self.unique or attempt == APPEND_ATTEMPTS:
                        raise
                    time.sleep(0.05 * attempt)
        return len(rows)

    def read(self, since: datetime | None = None, until: datetime | None = None,
             limit: int | None = None) -> pd.DataFrame:
        """Rows with ``since <= ts < until`` in ts order (with ``limit``: the latest ``limit`` of them).

        JSON columns hold Python lists and dicts, ``ts`` is datetime64 UTC, scores are floats (NaN when absent).
        """
        query = sa.select(*(predictions.c[name] for name in COLUMNS))
        if since is not None:
            query = query.where(predictions.c.ts >= _utc(since, "since"))
        if until is not None:
            query = query.where(predictions.c.ts < _utc(until, "until"))
        order = (predictions.c.ts, predictions.c.id)
        if limit is not None:
            if not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a non-negative int, not {limit!r}")
            query = query.order_by(*(c.desc() for c in order)).limit(limit)
        else:
            query = query.order_by(*order)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if limit is not None:
            rows.reverse()
        frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame[list(SCORES)] = frame[list(SCORES)].astype(float)
        frame["sku_match"] = frame["sku_match"].astype("boolean")
        return frame

    def ping(self) -> bool:
        """Whether the database answers (the service's readiness check)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(predictions.c.id).limit(1))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()


def make_engine(url: str | sa.URL) -> sa.Engine:
    """An engine for the log's database: SQLite with its pragmas; a server database with pre-ping (a connection the
    server closed, e.g. after a restart, is replaced before use rather than failing a request)."""
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def ddl_lock(conn: sa.Connection) -> None:
    """On PostgreSQL, hold a transaction-scoped advisory lock: concurrent ``CREATE TABLE IF NOT EXISTS`` of the same
    table can fail there (a unique violation on pg_type) when replicas start together. SQLite serialises DDL itself."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": DDL_LOCK})


def _unique(conn: sa.Connection) -> bool:
    """Make ``request_id`` unique; False (and a warning) for an older log already holding a duplicated id."""
    try:
        with conn.begin_nested():
            conn.execute(sa.schema.CreateIndex(unique_request_id, if_not_exists=True))
    except sa.exc.IntegrityError:
        warnings.warn("the prediction log holds duplicated request ids: request_id stays non-unique and appends "
                      "are not retried", RuntimeWarning, stacklevel=3)
        return False
    return True


def _idempotent_insert(dialect: str):
    """INSERT that skips a row whose request_id is already there (SQLite, PostgreSQL); a plain INSERT elsewhere."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return sa.insert(predictions)
    return insert(predictions).on_conflict_do_nothing(index_elements=[predictions.c.request_id])


def _add_missing_columns(conn: sa.Connection) -> None:
    """A log created by an older release gains the nullable columns added since (its rows read them as null)."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    for column in predictions.columns:
        if column.name not in present and column.nullable:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f'ALTER TABLE predictions ADD COLUMN {column.name} {kind}'))


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATH:
        raise ValueError(f"must be a non-empty path of at most {MAX_PATH} characters, not {value!r}")
    return value


def sqlite_path(url: sa.URL) -> Path | None:
    """The database file of a SQLite URL (None for other databases, in-memory and ``file:`` URIs)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.database.startswith("file:"):
        return None
    return Path(url.database)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")   # WAL: a commit survives a crash of the process, no fsync per row
    cursor.close()


def _utc(value: Any, key: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{key} must be a timezone-aware datetime, not {value!r}")
    return value.astimezone(UTC)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ValueError(f"must be a non-empty str of at most {MAX_TEXT} characters, not {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value!r}")
    return float(value)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"must be a bool, not {value!r}")
    return bool(value)


def _reasons(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of str, not {value!r}")
    return list(value)


def _models(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"must be a dict of family -> version tag (str -> str), not {value!r}")
    return dict(value)


def _probabilities(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"must be a dict of category -> probability, not {value!r}")
    return {k: _number(v) for k, v in value.items()}


def _checks(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a dict, not {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be plain JSON: {exc}") from None
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "ts": lambda value: datetime.now(UTC) if value is None else _utc(value, "ts"),
    "request_id": _text, "decision": _text,
    "reasons": _reasons, "models": _models, "checks": _checks,
    "sku_match": _optional(_flag), "prohibited": _optional(_probabilities), "image_path": _optional(_path),
    **{key: _optional(_text) for key in TEXTS},
    **{key: _optional(_number) for key in SCORES},
}
_DEFAULTS: dict[str, Any] = {"reasons": [], "models": {}, "checks": {}}


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """The validated row of one record: a ValueError names the first unknown, missing or ill-typed key."""
    if not isinstance(record, dict):
        raise ValueError(f"a prediction record must be a dict, not {type(record).__name__}")
    for key in record:
        if key not in _CHECKS:
            raise ValueError(f"unknown key {key!r} in a prediction record; known keys: {', '.join(COLUMNS)}")
    for key in REQUIRED:
        if record.get(key) is None:
            raise ValueError(f"missing required key {key!r} in a prediction record")
    row = {}
    for key, check in _CHECKS.items():
        try:
            row[key] = check(record.get(key, _DEFAULTS.get(key)))
        except ValueError as exc:
            raise ValueError(f"prediction record key {key!r}: {exc}") from None
    return row
