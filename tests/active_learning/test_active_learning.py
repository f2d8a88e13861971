"""Active learning on a copy of the trained tiny project (every family trained for real): a generated pool
with planted near-duplicates, the queue and its Label Studio files, answers back as a validated and
versioned batch, the prediction log as the pool, and the DAG run by Airflow."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from monitoring.prediction_log import PredictionLog, resolve_url
from pipelines.active_learning import answers, label_studio, scores
from pipelines.active_learning.pool import PoolError, pool_from_dir
from pipelines.active_learning.select import check_target, select_queue
from pipelines.train.families import detector, prohibited
from pipelines.data.generate import generate_batch
from pipelines.data.manifest import read_manifest, write_manifest
from pipelines.params import load_params
from pipelines.serve.photo_input import archive_photo
from pipelines.data.validate import format_outcome, validate_batch
from pipelines.data.version import version_batch

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DUPLICATES = {"pool-copy-0": "pool-000000", "pool-resaved-1": "pool-000001"}  # planted -> its original


def _plant_duplicates(pool: Path) -> None:
    """A byte-identical copy of photo 0 and a JPEG re-save (quality 70) of photo 1, as pool listings."""
    df = read_manifest(pool)
    extra = []
    for new, original in DUPLICATES.items():
        row = df[df["listing_id"] == original].iloc[0].to_dict()
        src, dest = pool / row["image"], pool / "images" / f"{new}.jpg"
        if new.startswith("pool-copy"):
            shutil.copyfile(src, dest)
        else:
            cv2.imwrite(str(dest), cv2.imread(str(src)), [cv2.IMWRITE_JPEG_QUALITY, 70])
        data = dest.read_bytes()
        row.update(listing_id=new, image=f"images/{new}.jpg", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        extra.append(row)
    write_manifest(pd.concat([df, pd.DataFrame(extra)], ignore_index=True), pool)


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("annotation", "incoming"))
    return dest


@pytest.fixture(scope="module")
def project(trained_project, tmp_path_factory) -> Path:
    """A copy of the trained tiny project (read-only to the tests: those that write copy it again) and a
    26-photo pool in data/pool/pool: 24 generated photos and 2 planted near-duplicates."""
    repo = _copy(trained_project, tmp_path_factory.mktemp("active_learning") / "repo")
    params = load_params(repo / "params.yaml")
    pool = generate_batch(repo / "data" / "pool", "pool", 24, 23, params=params, workers=2)
    _plant_duplicates(pool)
    return repo


def test_the_package_leaves_the_prediction_log_to_the_app_layer():
    """pipelines/active_learning imports params, data, train, serve and its own modules, never monitoring."""
    allowed = ("pipelines.params", "pipelines.data", "pipelines.train", "pipelines.serve", "pipelines.active_learning")
    for path in sorted((PROJECT / "pipelines" / "active_learning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert not name.startswith("monitoring"), (path.name, name)
                assert not name.startswith("pipelines") or name.startswith(allowed), (path.name, name)
        assert len(path.read_text().splitlines()) <= 400, path.name


def _pool(repo: Path) -> Path:
    return repo / "data" / "pool" / "pool"


def test_selection_takes_the_most_uncertain_and_one_photo_of_each_duplicate_group(project):
    params = load_params(project / "params.yaml")
    pool = pool_from_dir(_pool(project))
    model = prohibited.load_combined(project, params, ["cash"])
    unc = scores.uncertainty(prohibited.probabilities(project, params, pool, model)[:, 0])
    expected, groups = [], set()
    for i in np.argsort(-unc, kind="stable"):          # most uncertain first; the first of a group counts
        lid = pool["listing_id"][i]
        if DUPLICATES.get(lid, lid) not in groups:
            groups.add(DUPLICATES.get(lid, lid))
            expected.append(lid)

    top = select_queue(project, "prohibited", "cash", k=8, pool=_pool(project), stamp="top8")
    queue = pd.read_csv(top.path / "queue.csv")
    assert list(queue["listing_id"]) == expected[:8]
    assert list(queue["rank"]) == list(range(1, 9)) and queue["uncertainty"].is_monotonic_decreasing
    assert all((project / p).is_file() for p in queue["path"])

    everything = select_queue(project, "prohibited", "cash", k=100, pool=_pool(project), stamp="all")
    kept = set(pd.read_csv(everything.path / "queue.csv")["listing_id"])
    assert everything.scored == 26 and everything.size == 24 and everything.near_duplicates_skipped == 2
    for planted, original in DUPLICATES.items():
        assert len(kept & {planted, original}) == 1, (planted, original)
    assert "100 photos" not in everything.summary() and "24 photos for prohibited:cash" in everything.summary()

    shuffled = [select_queue(project, "prohibited", "cash", k=8, pool=_pool(project), stamp=f"random{n}",
                             strategy="random", seed=5) for n in (1, 2)]
    drawn = [list(pd.read_csv(q.path / "queue.csv")["listing_id"]) for q in shuffled]
    assert drawn[0] == drawn[1] and drawn[0] != expected[:8] and "in random order" in shuffled[0].summary()


def _check_label_studio(tasks: list[dict], config: str, root: Path) -> int:
    """Label Studio's task import format against the labeling config; returns the number of regions."""
    view = ET.fromstring(config)
    image = view.find("Image")
    assert view.tag == "View" and image is not None and image.get("value") == "$image"
    controls = {c.get("name"): c for c in view if c.tag in ("Choices", "RectangleLabels")}
    assert controls and all(c.get("toName") == image.get("name") for c in controls.values())
    kinds = {"Choices": ("choices", "Choice"), "RectangleLabels": ("rectanglelabels", "Label")}
    regions = 0
    assert isinstance(tasks, list) and tasks
    for t in tasks:
        assert set(t) == {"data", "predictions"}
        url = t["data"]["image"]
        assert isinstance(url, str) and url.startswith("/data/local-files/?d=")
        assert (root / url.removeprefix("/data/local-files/?d=")).is_file()
        for pred in t["predictions"]:
            assert isinstance(pred["model_version"], str) and pred["model_version"]
            assert isinstance(pred["score"], float) and 0.0 <= pred["score"] <= 1.0
            assert isinstance(pred["result"], list)
            for r in pred["result"]:
                control = controls[r["from_name"]]
                kind, option = kinds[control.tag]
                assert r["to_name"] == image.get("name") and r["type"] == kind
                allowed = {o.get("value") for o in control.iter(option)}
                assert r["value"][kind] and set(r["value"][kind]) <= allowed
                if kind == "rectanglelabels":
                    v = r["value"]
                    assert all(isinstance(v[key], float) for key in ("x", "y", "width", "height"))
                    assert 0 <= v["x"] <= 100 and 0 <= v["y"] <= 100 and v["width"] > 0 and v["height"] > 0
                    assert v["x"] + v["width"] <= 100 + 1e-9 and v["y"] + v["height"] <= 100 + 1e-9
                    assert isinstance(r["original_width"], int) and isinstance(r["original_height"], int)
                regions += 1
    return regions


def _answer(tasks: list[dict], result_of) -> list[dict]:
    """A Label Studio JSON export: every task answered by ``result_of(task)`` (None: not answered)."""
    export = []
    for n, t in enumerate(tasks):
        result = result_of(t)
        annotations = [] if result is None else [{"id": n, "completed_by": 1, "was_cancelled": False,
                                                  "ground_truth": False, "result": result}]
        export.append({"id": n, "data": t["data"], "annotations": annotations, "predictions": t["predictions"]})
    return export


def test_the_queue_imports_into_label_studio_and_answers_come_back_as_a_valid_versioned_batch(project, tmp_path):
    project = _copy(project, tmp_path / "repo")      # versions a batch: its own copy
    params = load_params(project / "params.yaml")
    queue = select_queue(project, "prohibited", "cash", k=100, pool=_pool(project), stamp="answers")
    tasks = json.loads((queue.path / "label_studio.json").read_text())
    config = (queue.path / "label_config.xml").read_text()
    assert _check_label_studio(tasks, config, project) == len(tasks) == queue.size

    truth = read_manifest(_pool(project)).set_index("listing_id")
    flipped, skipped = tasks[0]["data"]["listing_id"], tasks[1]["data"]["listing_id"]

    def oracle(t):
        lid = t["data"]["listing_id"]
        if lid == skipped:
            return None
        yes = ("cash" in list(truth.loc[lid, "prohibited"])) != (lid == flipped)   # one annotator error
        return [{"from_name": "cash", "to_name": "image", "type": "choices", "value": {"choices": ["yes" if yes else "no"]}}]

    export = tmp_path / "export.json"
    export.write_text(json.dumps(_answer(tasks, oracle)))
    batch = answers.import_labels(export, project)
    assert batch == project / "data" / "incoming" / "al-prohibited-cash-answers"
    rows = read_manifest(batch).set_index("listing_id")
    assert len(rows) == len(tasks) - 1 and skipped not in rows.index
    provenance = json.loads((batch / answers.SELECTION_FILE).read_text())
    assert provenance["queues"] == [queue.path.relative_to(project).as_posix()]
    assert (provenance["answered"], provenance["imported"], provenance["already_versioned"]) == (len(rows),) * 2 + (0,)
    assert ("cash" in list(rows.loc[flipped, "prohibited"])) != ("cash" in list(truth.loc[flipped, "prohibited"]))

    outcome = validate_batch(batch, repo=project, params=params)
    assert outcome.ok, format_outcome(outcome)
    versioned = version_batch(batch, repo=project, params=params, push=False)
    assert versioned.n_rows == len(rows) and versioned.splits["test"] == 0
    assert json.loads((project / "data" / "batches" / batch.name / answers.SELECTION_FILE).read_text()) == provenance
    with pytest.raises(PoolError, match="already in the versioned data"):   # labelled photos are not sent again
        select_queue(project, "prohibited", "cash", k=5, pool=batch.parent.parent / "batches" / batch.name)


def test_dirt_queue_and_drawn_rectangles_round_trip_to_manifest_boxes(project, tmp_path):
    queue = select_queue(project, "detector", k=6, pool=_pool(project), stamp="dirt")
    tasks = json.loads((queue.path / "label_studio.json").read_text())
    config = (queue.path / "label_config.xml").read_text()
    _check_label_studio(tasks, config, project)
    assert queue.model_version.startswith("detector:defects@") and "+yolo@" in queue.model_version

    # the uncertainty is the larger of the dirt net's and that of the least sure YOLO dirt box
    params = load_params(project / "params.yaml")
    pool = pool_from_dir(_pool(project)).set_index("listing_id")
    listed = pd.read_csv(queue.path / "queue.csv")
    photos = pool.loc[listed["listing_id"]].reset_index()
    p = detector.defect_scores(project, params, photos)["dirt_score"].to_numpy()
    boxes = scores.dirt_boxes(project, params, list(photos["path"]))
    box = np.array([max([1 - abs(2 * b[4] - 1) for b in found], default=0.0) for found in boxes])
    np.testing.assert_allclose(listed["score"], p, atol=1e-6)
    np.testing.assert_allclose(listed["uncertainty"], np.maximum(1 - np.abs(2 * p - 1), box), atol=1e-6)
    for t, found in zip(tasks, boxes):         # pre-filled rectangles: the boxes at or above box_confidence
        assert len(t["predictions"][0]["result"]) == sum(b[4] >= params.active_learning.box_confidence for b in found)

    truth = read_manifest(_pool(project)).set_index("listing_id")
    drawn = {t["data"]["listing_id"]: [label_studio.rectangle((b["x0"], b["y0"], b["x1"], b["y1"]), 256, 256)
                                       for b in truth.loc[t["data"]["listing_id"], "boxes"] if b["label"] == "dirt"]
                                      or [label_studio.rectangle((0.1, 0.2, 0.3, 0.5), 256, 256)] for t in tasks[:2]}
    answered = [dict(t, predictions=[dict(t["predictions"][0], result=drawn.get(t["data"]["listing_id"], []))])
                for t in tasks]
    assert _check_label_studio(answered, config, project) >= 2          # the answers fit the config too
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_answer(tasks, lambda t: drawn.get(t["data"]["listing_id"], []))))
    out = subprocess.run([str(BIN / "reviewops"), "import-labels", str(export), "--batch", "dirt-answers"], cwd=project,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"batch dirt-answers: {len(tasks)} answered photos -> data/incoming/dirt-answers" in out.stdout
    rows = read_manifest(project / "data" / "incoming" / "dirt-answers").set_index("listing_id")
    for lid, row in rows.iterrows():
        boxes = [[b[k] for k in ("x0", "y0", "x1", "y1")] for b in row["boxes"] if b["label"] == "dirt"]
        want = [[r["value"]["x"] / 100, r["value"]["y"] / 100, (r["value"]["x"] + r["value"]["width"]) / 100,
                 (r["value"]["y"] + r["value"]["height"]) / 100] for r in drawn.get(lid, [])]
        np.testing.assert_allclose(np.array(boxes).reshape(-1, 4), np.array(want).reshape(-1, 4), atol=1e-6)
        assert row["dirt"] == bool(want)
        others = [b["label"] for b in row["boxes"] if b["label"] != "dirt"]
        assert others == [b["label"] for b in truth.loc[lid, "boxes"] if b["label"] != "dirt"]


def test_the_prediction_log_is_a_pool_and_the_cli_reports_the_queue_or_a_clear_error(project, tmp_path):
    """The service archives each reviewed photo by SHA-256 and logs its path: those photos are the pool."""
    project = _copy(project, tmp_path / "repo")
    params = load_params(project / "params.yaml")
    live = generate_batch(tmp_path / "live", "live", 3, 29, params=params, workers=1)
    archive = project / params.serving.photo_archive
    archived = [archive_photo(photo.read_bytes(), archive) for photo in sorted((live / "images").glob("*.jpg"))]
    gone = archive_photo(b"\xff\xd8\xff" + bytes(64), archive)
    gone.unlink()                                                   # archived once, since cleaned up
    log = PredictionLog(resolve_url(params.serving.prediction_log, project))
    logged = [archived[0], archived[1], archived[1], archived[2], gone, None]   # a photo reviewed twice, one not kept
    log.append([{"request_id": f"r{i}", "listing_id": f"L{i}", "decision": "auto_pass",
                 **({"image_path": str(path)} if path else {})} for i, path in enumerate(logged)])
    log.close()

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("REVIEWOPS_PREDICTION_LOG", None)
    run = lambda *a: subprocess.run([str(BIN / "reviewops"), "select", *a], cwd=project, env=env,  # noqa: E731
                                    capture_output=True, text=True)
    out = run("--family", "prohibited", "--category", "cash", "--k", "2")
    assert out.returncode == 0, out.stderr
    assert "2 photos for prohibited:cash (most uncertain first) of 3 scored" in out.stdout
    (queue,) = (project / "data" / "annotation" / "prohibited-cash").iterdir()
    listed = pd.read_csv(queue / "queue.csv")
    assert set(listed["source"]) <= {str(p) for p in archived} and len(listed) == 2
    for row in listed.itertuples():
        assert row.listing_id == hashlib.sha256((project / row.path).read_bytes()).hexdigest() == row.sha256

    (project / "monitoring" / "predictions.sqlite").unlink()
    out = run("--family", "prohibited", "--category", "cash")
    assert out.returncode == 2 and "no prediction log" in out.stderr and "--pool" in out.stderr
    for family, category, message in (("colour", None, "unknown family 'colour'"),
                                      ("prohibited", "bananas", "unknown prohibited category 'bananas'"),
                                      ("detector", "cash", "--category applies to the prohibited family only")):
        with pytest.raises(ValueError, match=message):
            check_target(params, family, category)
    out = run("--family", "detector", "--k", "0", "--pool", str(_pool(project)))
    assert out.returncode == 2 and "--k" in out.stderr


DAG_RUN = """
import json, sys
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1], bundle_name="dags-folder")  # _common importable
assert not bag.import_errors, bag.import_errors
dag = bag.dags["active_learning"]
print(json.dumps({"tasks": {t.task_id: [t.retries, float(t.retry_exponential_backoff), t.owner] for t in dag.tasks},
                  "tags": sorted(dag.tags), "doc": bool(dag.doc_md)}))
run = dag.test(run_conf={"pool": sys.argv[2], "k": 3})
print(json.dumps({"state": str(run.state), "run_id": run.run_id, "tis": sorted([ti.task_id, ti.map_index, str(ti.state)]
                                                         for ti in run.get_task_instances())}))
"""


@pytest.mark.timeout(600)
def test_the_dag_parses_and_a_run_writes_a_queue_per_category_and_for_dirt(project, tmp_path):
    """Real Airflow (SQLite) in a subprocess with its own AIRFLOW_HOME: one mapped task per category of
    params.yaml and one for dirt, each writing its queue."""
    repo = _copy(project, tmp_path / "repo")
    categories = load_params(repo / "params.yaml").prohibited.categories
    dags = tmp_path / "dags"
    dags.mkdir()
    for name in ("active_learning.py", "_common.py"):          # the DAG takes its defaults from _common
        shutil.copy(PROJECT / "dags" / name, dags)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "REVIEWOPS_ROOT": str(repo),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", DAG_RUN, str(dags), str(_pool(repo))], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    parsed, run = (json.loads(line) for line in out.stdout.splitlines() if line.startswith("{"))
    assert parsed["tasks"] == {t: [2, 2.0, "ml-platform"] for t in ("categories", "select_prohibited", "select_dirt")}
    assert parsed["doc"] and "active-learning" in parsed["tags"]
    assert run["state"] == "success", run
    assert run["tis"] == [["categories", -1, "success"], ["select_dirt", -1, "success"],
                          *(["select_prohibited", i, "success"] for i in range(len(categories)))]
    for family in [f"prohibited-{c}" for c in categories] + ["detector"]:
        (queue,) = (repo / "data" / "annotation" / family).iterdir()
        assert queue.name == label_studio.folder_name(run["run_id"])
        assert len(pd.read_csv(queue / "queue.csv")) == 3 and json.loads((queue / "label_studio.json").read_text())
