"""Batch validation (Great Expectations): clean batches pass, broken ones are quarantined with reasons.

Real generated photos (tiny batches), a real GE validation, no mocks.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipelines.data.generate import generate_batch
from pipelines.data.manifest import COLUMNS, MANIFEST_NAME, read_manifest, write_manifest
from pipelines.params import load_params
from pipelines.data.phash import phash_file
from pipelines.data.splits import assign_splits
from pipelines.data.validate import SUITE_PATH, format_outcome, suite_parameters, validate_batch


@pytest.fixture(scope="module")
def params():
    return load_params()


@pytest.fixture(scope="module")
def clean_batch(tmp_path_factory, params) -> Path:
    """A generated 40-photo batch, never modified: tests work on copies."""
    return generate_batch(tmp_path_factory.mktemp("gen"), "b1", n=40, seed=5, params=params, workers=1)


def _incoming(src: Path, repo: Path, batch_id: str) -> Path:
    dest = repo / "data" / "incoming" / batch_id
    shutil.copytree(src, dest)
    return dest


def _by(outcome, column: str) -> dict:
    found = [f for f in outcome.failures if f["column"] == column]
    assert found, f"no failure on {column}: {format_outcome(outcome)}"
    return found[0]


def _tree(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*"))}


def test_suite_file_covers_the_manifest_and_params(params):
    suite = json.loads(SUITE_PATH.read_text())
    not_null = {e["kwargs"]["column"] for e in suite["expectations"]
                if e["type"] == "expect_column_values_to_not_be_null"}
    assert not_null == set(COLUMNS), "every manifest column is checked for missing values"
    values = suite_parameters(params, suite)
    for key, (lo, hi) in params.validation.prevalence.items():
        assert (values[f"prevalence_{key}_min"], values[f"prevalence_{key}_max"]) == (lo, hi)
    assert values["min_side"] == params.validation.min_side


def test_clean_generated_batch_passes_and_stays_in_place(clean_batch, tmp_path, params):
    batch = _incoming(clean_batch, tmp_path, "b1")
    before = _tree(batch)
    outcome = validate_batch(batch, repo=tmp_path, params=params)
    assert outcome.ok, format_outcome(outcome)
    assert (outcome.batch_id, outcome.n_rows, outcome.failures) == ("b1", 40, [])
    assert outcome.location == batch and _tree(batch) == before, "a valid batch is left untouched"
    assert outcome.result_path is None and not (tmp_path / "data" / "quarantine").exists()
    assert "valid" in format_outcome(outcome)


def test_broken_batch_is_quarantined_and_each_problem_named(clean_batch, tmp_path, params):
    batch = _incoming(clean_batch, tmp_path, "b2")
    df = read_manifest(batch)
    split = assign_splits(df.listing_id, params, first_batch=True)
    test_rows = df.index[split == "test"]
    train_rows = [i for i in df.index[split == "train"] if len(df.boxes[i]) > 0]
    assert len(test_rows) >= 1 and len(train_rows) >= 4
    truncated, bad_score, bad_box, duplicate = (df.listing_id[i] for i in train_rows[:4])
    test_photo = df.listing_id[test_rows[0]]

    jpeg = batch / df.image[train_rows[0]]
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    df.loc[train_rows[1], "blur_score"] = 1.5
    boxes = [dict(b) for b in df.boxes[train_rows[2]]]
    boxes[0].update(x0=0.6, x1=1.4)
    df.at[train_rows[2], "boxes"] = boxes
    shutil.copyfile(batch / df.image[test_rows[0]], batch / df.image[train_rows[3]])
    write_manifest(df, batch)

    outcome = validate_batch(batch, repo=tmp_path, params=params)
    assert not outcome.ok
    where = tmp_path / "data" / "quarantine" / "b2"
    assert outcome.location == where and not batch.exists()
    assert len(list((where / "images").glob("*.jpg"))) == 40 and (where / MANIFEST_NAME).exists()
    assert outcome.docs_path == where / "data_docs" / "index.html" and outcome.docs_path.exists()
    assert list((where / "data_docs" / "validations").rglob("*.html")), "GE's validation page is there"

    decode = _by(outcome, "decodes")
    assert decode["expectation"] == "expect_column_values_to_be_in_set"
    assert decode["offending_listing_ids"] == [truncated] and "decode" in decode["description"]
    score = next(f for f in outcome.failures if f["column"] == "blur_score"
                 and f["expectation"] == "expect_column_values_to_be_between")
    assert score["offending_listing_ids"] == [bad_score] and score["unexpected_values"] == [1.5]
    assert _by(outcome, "blur_score_error")["offending_listing_ids"] == [bad_score]
    box = _by(outcome, "boxes_inside_image")
    assert box["offending_listing_ids"] == [bad_box] and "outside the image" in box["description"]
    dup = _by(outcome, "near_duplicate_of")
    assert dup["expectation"] == "expect_column_values_to_be_null"
    assert dup["offending_listing_ids"] == [duplicate]
    assert duplicate in dup["description"] and test_photo in dup["description"]
    # the copied file no longer matches the manifest's hash either; the truncated one neither
    assert set(_by(outcome, "sha256")["offending_listing_ids"]) == {truncated, duplicate}

    report = json.loads(outcome.result_path.read_text())
    assert outcome.result_path == where / "validation_result.json"
    assert report["ok"] is False and report["batch_id"] == "b2" and report["n_rows"] == 40
    assert report["failures"] == json.loads(json.dumps(outcome.failures))
    text = format_outcome(outcome)
    for name in (truncated, bad_score, bad_box, duplicate, "quarantined"):
        assert name in text


def test_missing_manifest_or_bad_schema_is_a_clear_failure(clean_batch, tmp_path, params):
    batch = _incoming(clean_batch, tmp_path, "b3")
    (batch / MANIFEST_NAME).unlink()
    outcome = validate_batch(batch, repo=tmp_path, params=params)
    assert not outcome.ok and [f["expectation"] for f in outcome.failures] == ["manifest_exists"]
    assert MANIFEST_NAME in outcome.failures[0]["description"]
    assert outcome.location == tmp_path / "data" / "quarantine" / "b3"
    assert len(list((outcome.location / "images").glob("*.jpg"))) == 40
    assert json.loads(outcome.result_path.read_text())["failures"][0]["expectation"] == "manifest_exists"

    # same id again: the first quarantined copy is kept, the new one gets a suffix
    batch = _incoming(clean_batch, tmp_path, "b3")
    df = read_manifest(batch).drop(columns=["dirt"])
    df["width"] = df["width"].astype(str)
    df.to_parquet(batch / MANIFEST_NAME)
    outcome = validate_batch(batch, repo=tmp_path, params=params)
    assert not outcome.ok and outcome.location == tmp_path / "data" / "quarantine" / "b3.2"
    kinds = {(f["expectation"], f["column"]) for f in outcome.failures}
    assert ("expect_column_values_to_be_of_type", "width") in kinds
    missing = _by_expectation(outcome, "expect_table_columns_to_match_set")
    assert "dirt" in missing["description"]


def _by_expectation(outcome, expectation: str) -> dict:
    return next(f for f in outcome.failures if f["expectation"] == expectation)


def test_near_duplicate_of_a_frozen_test_photo_fails(clean_batch, tmp_path, params):
    df1 = read_manifest(clean_batch)
    frozen = df1[assign_splits(df1.listing_id, params, first_batch=True) == "test"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test_split.json").write_text(json.dumps({
        "batch": "b1", "listing_ids": list(frozen.listing_id),
        "phash": [phash_file(clean_batch / p) for p in frozen.image]}))

    batch = generate_batch(tmp_path / "data" / "incoming", "b4", n=12, seed=9, params=params, workers=1)
    df = read_manifest(batch)
    target = batch / df.image[5]
    buf = io.BytesIO()  # a re-encoded copy: a near, not byte-identical, duplicate
    Image.open(clean_batch / frozen.image.iloc[0]).save(buf, "JPEG", quality=60)
    target.write_bytes(buf.getvalue())
    df.loc[5, "sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    df.loc[5, "bytes"] = len(buf.getvalue())
    write_manifest(df, batch)

    outcome = validate_batch(batch, repo=tmp_path, params=params)
    assert not outcome.ok
    assert [(f["expectation"], f["column"]) for f in outcome.failures] == \
        [("expect_column_values_to_be_null", "near_duplicate_of")]
    dup = outcome.failures[0]
    assert dup["offending_listing_ids"] == [df.listing_id[5]]
    assert frozen.listing_id.iloc[0] in dup["description"] and "frozen test photo" in dup["description"]
    assert outcome.location == tmp_path / "data" / "quarantine" / "b4"
