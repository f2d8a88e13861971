"""monitoring.prediction_log on real SQLite files: round trip, time windows, concurrent writers, validation, URLs."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring.prediction_log import COLUMNS, ENV_VAR, PredictionLog, predictions, resolve_url
from pipelines.params import load_params

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CHECKS = {"sku": {"predicted": "phone-x-green", "similarity": 0.91, "match": True},
          "blur": {"score": 0.71, "threshold": 0.5, "flag": True},
          "centering": {"offset": [0.02, -0.01], "flag": False},
          "prohibited": {"cash": 0.97, "knife": 0.01}}


def record(i: int = 0, **over) -> dict:
    """A full record as the service writes it."""
    rec = {"ts": T0 + timedelta(minutes=i), "request_id": f"req-{i}", "listing_id": f"L{i}",
           "decision": "manual_review", "reasons": ["blur", "prohibited:cash"],
           "models": {"sku": "sku:abc123", "blur": "blur:def456"},
           "blur_score": 0.71, "sku_claimed": "phone-x-green", "sku_predicted": "phone-x-green",
           "sku_similarity": 0.91, "sku_match": True, "sticker_missing_score": 0.1, "dirt_score": 0.05,
           "centring_offset": 0.0224, "manipulation_score": 0.03, "prohibited": {"cash": 0.97, "knife": 0.01},
           "prohibited_max": 0.97, "latency_ms": 41.5, "checks": CHECKS}
    return {**rec, **over}


@pytest.fixture
def log(tmp_path):
    plog = PredictionLog(f"sqlite:///{tmp_path / 'logs' / 'predictions.sqlite'}")
    yield plog
    plog.close()


def test_round_trip(log):
    assert log.append([record(0), record(1, sku_match=False, prohibited=None, blur_score=None, listing_id=None)]) == 2
    frame = log.read()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert frame["ts"].iloc[0] == pd.Timestamp(T0)
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["request_id"] == "req-0" and first["decision"] == "manual_review"
    assert first["reasons"] == ["blur", "prohibited:cash"]
    assert first["models"] == {"sku": "sku:abc123", "blur": "blur:def456"}
    assert first["prohibited"] == {"cash": 0.97, "knife": 0.01} and first["checks"] == CHECKS
    assert first["blur_score"] == pytest.approx(0.71) and first["latency_ms"] == pytest.approx(41.5)
    assert bool(first["sku_match"]) is True and bool(second["sku_match"]) is False
    assert second["prohibited"] is None and np.isnan(second["blur_score"]) and second["listing_id"] is None


def test_defaults_and_minimal_record(log):
    before = datetime.now(UTC)
    log.append([{"request_id": "r", "decision": "pass", "blur_score": np.float32(0.25), "sku_match": np.bool_(True)}])
    row = log.read().iloc[0]
    assert before - timedelta(seconds=1) <= row["ts"].to_pydatetime() <= datetime.now(UTC) + timedelta(seconds=1)
    assert row["reasons"] == [] and row["models"] == {} and row["checks"] == {} and row["prohibited"] is None
    assert row["blur_score"] == 0.25 and bool(row["sku_match"]) is True
    assert pd.isna(row["dirt_score"]) and pd.isna(log.read().loc[0, "sku_claimed"])


def test_time_window_order_and_limit(log):
    log.append([record(i) for i in (5, 1, 3, 0, 4, 2)])           # written out of order
    assert log.read()["request_id"].tolist() == [f"req-{i}" for i in range(6)]
    window = log.read(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4))
    assert window["request_id"].tolist() == ["req-1", "req-2", "req-3"]     # since inclusive, until exclusive
    paris = timezone(timedelta(hours=1))                                     # any zone: compared as instants
    assert log.read(since=(T0 + timedelta(minutes=4)).astimezone(paris))["request_id"].tolist() == ["req-4", "req-5"]
    assert log.read(limit=2)["request_id"].tolist() == ["req-4", "req-5"]   # the latest two, in ts order
    empty = log.read(since=T0 + timedelta(days=1))
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    with pytest.raises(ValueError, match="since"):
        log.read(since=datetime(2025, 3, 1))                                 # naive: which zone?


@pytest.mark.parametrize("bad,key", [({"colour": "red"}, "colour"), ({"request_id": None}, "request_id"),
                                     ({"decision": None}, "decision"), ({"blur_score": "high"}, "blur_score"),
                                     ({"sku_match": "yes"}, "sku_match"), ({"reasons": "blur"}, "reasons"),
                                     ({"models": {"sku": 3}}, "models"), ({"prohibited": {"cash": float("nan")}}, "prohibited"),
                                     ({"checks": {"x": object()}}, "checks"), ({"ts": datetime(2025, 1, 1)}, "ts")])
def test_bad_record_leaves_the_log_unchanged(log, bad, key):
    log.append([record(0)])
    with pytest.raises(ValueError, match=repr(key)):
        log.append([record(1), record(2, **bad)])                    # the good record is not written either
    assert log.read()["request_id"].tolist() == ["req-0"]


def test_missing_required_key_is_named(log):
    rec = record(0)
    del rec["decision"]
    with pytest.raises(ValueError, match="missing required key 'decision'"):
        log.append([record(1), rec])
    assert log.read().empty


def _writer(url: str, worker: int, batches: int, barrier) -> None:
    plog = PredictionLog(url)
    barrier.wait()
    for b in range(batches):
        plog.append([record(0, request_id=f"w{worker}-b{b}-r{r}", ts=datetime.now(UTC)) for r in range(5)])
    plog.close()


def test_concurrent_appends_from_processes_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'predictions.sqlite'}"
    ctx = multiprocessing.get_context("fork")                               # forked like server workers, own engines
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(url, w, 40, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    plog = PredictionLog(url)
    ids = plog.read()["request_id"].tolist()
    plog.close()
    assert len(ids) == 4 * 40 * 5
    assert set(ids) == {f"w{w}-b{b}-r{r}" for w in range(4) for b in range(40) for r in range(5)}
    with sa.create_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_ping(log):
    assert log.ping() is True
    with log.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE predictions")
    assert log.ping() is False


def test_resolve_url(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    configured = load_params().serving.prediction_log
    assert resolve_url(configured, tmp_path) == f"sqlite:///{tmp_path.resolve()}/monitoring/predictions.sqlite"
    assert resolve_url("sqlite:////var/lib/reviewops/log.sqlite", tmp_path) == "sqlite:////var/lib/reviewops/log.sqlite"
    pg = "postgresql+psycopg://reviewops:s3cret@db:5432/reviewops"
    assert resolve_url(pg, tmp_path) == pg                                   # password kept, not masked
    monkeypatch.setenv(ENV_VAR, "sqlite:///elsewhere/log.sqlite")
    assert resolve_url(configured, tmp_path) == f"sqlite:///{tmp_path.resolve()}/elsewhere/log.sqlite"
    monkeypatch.setenv(ENV_VAR, pg)
    assert resolve_url(configured, tmp_path) == pg


def test_resolved_log_is_created_under_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    plog = PredictionLog(resolve_url("sqlite:///monitoring/predictions.sqlite", tmp_path))
    plog.append([record(0)])
    plog.close()
    assert (tmp_path / "monitoring" / "predictions.sqlite").is_file()
    again = PredictionLog(resolve_url("sqlite:///monitoring/predictions.sqlite", tmp_path))   # reopening keeps rows
    assert again.read()["request_id"].tolist() == ["req-0"]
    again.close()


def test_a_log_created_before_image_path_gains_the_column_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.sqlite"
    old = sa.MetaData()
    legacy = sa.Table("predictions", old, *(c._copy() for c in predictions.columns if c.name != "image_path"))
    engine = sa.create_engine(f"sqlite:///{db}")
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(legacy), [{"ts": T0, "request_id": "old-1", "decision": "auto_pass", "reasons": [],
                                          "models": {}, "checks": {}}])
    engine.dispose()
    plog = PredictionLog(f"sqlite:///{db}")
    plog.append([record(1, image_path="/photos/ab/abcd.jpg")])
    rows = plog.read()
    plog.close()
    assert list(rows["request_id"]) == ["old-1", "req-1"]
    assert rows["image_path"].iloc[0] is None and rows["image_path"].iloc[1] == "/photos/ab/abcd.jpg"


def test_archive_photo_names_the_file_by_its_hash_and_writes_it_once(tmp_path):
    import hashlib

    from pipelines.serve.photo_input import archive_photo

    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    first = archive_photo(data, tmp_path / "photos")
    mtime = first.stat().st_mtime_ns
    again = archive_photo(data, tmp_path / "photos")
    digest = hashlib.sha256(data).hexdigest()
    assert first == again == tmp_path / "photos" / digest[:2] / f"{digest}.jpg"
    assert first.read_bytes() == data and again.stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "photos").rglob("*.tmp")]


def test_request_id_is_unique_and_a_replayed_append_adds_nothing(log):
    """An append retried after a failure whose commit is unknown (a dropped connection) writes each row once."""
    assert log.unique
    log.append([record(0), record(1)])
    log.append([record(1), record(2)])                                     # record 1 replayed, record 2 new
    assert log.read()["request_id"].tolist() == ["req-0", "req-1", "req-2"]


def test_an_older_log_with_duplicated_request_ids_still_opens(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:                                            # the table as older releases made it
        conn.execute(sa.schema.CreateTable(predictions))
        conn.execute(sa.insert(predictions), [{"ts": T0, "request_id": "dup", "decision": "auto_pass", "reasons": [],
                                               "models": {}, "checks": {}}] * 2)
    engine.dispose()
    with pytest.warns(RuntimeWarning, match="duplicated request ids"):
        plog = PredictionLog(url)
    assert plog.unique is False
    plog.append([record(0, request_id="dup")])
    assert plog.read()["request_id"].tolist() == ["dup", "dup", "dup"]
    plog.close()
