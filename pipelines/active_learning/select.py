"""Active learning: send the photos a model is least sure of to annotators; their answers come back
as a new data batch.

    reviewops select --family prohibited --category cash --k 500 [--pool DIR]
    reviewops select --family detector --k 500 [--pool DIR]            # the dirt check

Pool. The unlabelled photos to choose from: a directory (a generated batch, whose labels are
ignored here, or any folder of JPEG/PNG photos), or without ``--pool`` the photos the service
archived (``serving.photo_archive``) and logged in the prediction log (column ``image_path`` at
``serving.prediction_log``), each once. Photos already in the versioned data are left out; at most
``active_learning.pool_size`` photos are scored (a folder's first, the log's newest).

Score and uncertainty. Each photo is scored by the trained models under ``models/``, through the
family's own loader and inference. Prohibited: the category classifier's probability p, uncertainty
``1 - |2p - 1|`` (1 at p = 0.5, 0 at p = 0 or 1). Dirt: the larger of two uncertainties, that of the
defects net's dirt probability (what the service flags on) and that of the least sure YOLO dirt box
(a box at confidence 0.5 is a coin flip; boxes from ``train.detector.conf`` up count). Not "lowest
maximum box confidence": on the demo data the YOLO dirt boxes reached mAP50 0.0, so that rule would
pick the photos where YOLO finds nothing, mostly clean ones.

Selection. Greedy, most uncertain first. A photo is skipped as a near-duplicate of one already
selected when their embeddings (the prohibited family's frozen trunk output, averaged over a 4 x 4
grid, L2-normalised) lie within ``active_learning.duplicate_distance`` (cosine distance) or their
pHashes within ``validation.phash_max_distance`` bits. Both are needed: byte-identical and resized
copies sit at embedding distance 0 to 0.05, but a JPEG re-save at quality 60 moves the embedding by
up to 0.11 while distinct photos of the tiny batch come as close as 0.04 (256 px), and pHash keeps
the re-save within 12 bits against at least 22 for distinct photos (``pipelines/data/phash.py``). A photo
whose pHash is that close to a frozen test photo is skipped too: validation would refuse its label.
``strategy="random"`` walks the pool in random order instead (the baseline of
``benchmarks/active_learning.py``), with the same duplicate rules.

Queue. ``data/annotation/<family>[-<category>]/<stamp>/``: ``images/`` (the selected photos),
``queue.csv`` (rank, listing_id, path, score = p, uncertainty, source, source_manifest, sha256),
``label_studio.json`` (Label Studio tasks with the model's pre-annotation: a yes/no choice for a
prohibited category, dirt rectangles from YOLO boxes at or above ``active_learning.box_confidence``
in percent coordinates; the prediction ``score`` is ``1 - uncertainty``, so Label Studio's "sort
by prediction score" shows the most uncertain first) and ``label_config.xml``.
Image URLs are Label Studio local-file URLs relative to the project root
(``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<project>``).

Import. ``reviewops import-labels EXPORT`` (``import_labels``) turns Label Studio's JSON export of
answered tasks into ``data/incoming/<batch>/`` (photos + manifest) for ``reviewops validate`` and
``reviewops version``.
The manifest needs every label of the platform (blur votes, SKU, stickers, ...), and a one-question
task collects one: the answer replaces that label, and every other column is copied from the photo's
source manifest (a generated pool carries the generator's labels, unused by selection). A photo
without a source manifest (from the prediction log or a plain folder) cannot become a manifest row:
the import refuses it and says so rather than invent labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipelines.data import manifest as mf
from pipelines.data.dataset import INCOMING_DIR, frozen_test_phashes, versioned_manifest
from pipelines.train.evaluate import model_dir
from pipelines.train.families import common, detector, prohibited
from pipelines.params import Params, load_params
from pipelines.data.phash import phash_file
from pipelines.data.validate import SELECTION_FILE  # in an imported batch: which queues and export it came from
from pipelines.train.trunk import Trunk

ANNOTATION_DIR = Path("data/annotation")
TARGETS = ("prohibited", "detector")
STRATEGIES = ("uncertainty", "random")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LOCAL_FILES = "/data/local-files/?d="
EMBEDDING_GRID = 4  # cells per side of the embedding's average pooling


class PoolError(ValueError):
    """No usable pool, or answers that cannot become a batch; the message says why."""


@dataclass(frozen=True)
class Queue:
    path: Path
    family: str
    category: str | None
    strategy: str
    size: int
    scored: int
    near_duplicates_skipped: int
    test_duplicates_skipped: int
    model_version: str

    def summary(self) -> str:
        what = f"{self.family}:{self.category}" if self.category else "detector:dirt"
        order = "most uncertain first" if self.strategy == "uncertainty" else "in random order"
        return (f"queue {self.path}: {self.size} photos for {what} ({order}) of {self.scored} scored\n"
                f"  skipped {self.near_duplicates_skipped} near-duplicates, {self.test_duplicates_skipped} "
                f"near-copies of test photos; model {self.model_version}\n"
                f"  Label Studio: label_studio.json (tasks + pre-annotations), label_config.xml; "
                f"list: queue.csv; photos: images/")

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def prohibited_categories(root: str | Path) -> list[str]:
    """The prohibited categories of the project's params.yaml (one selection each)."""
    return list(load_params(Path(root) / "params.yaml").prohibited.categories)


def check_target(params: Params, family: str, category: str | None) -> None:
    if family not in TARGETS:
        raise ValueError(f"unknown family {family!r} for selection: expected one of {', '.join(TARGETS)} "
                         f"(detector selects for the dirt check)")
    if family == "prohibited" and category not in params.prohibited.categories:
        raise ValueError(f"unknown prohibited category {category!r}: params.yaml prohibited.categories is "
                         f"{list(params.prohibited.categories)}")
    if family == "detector" and category is not None:
        raise ValueError("--category applies to the prohibited family only")


# --- the pool --------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _from_paths(paths: list[Path]) -> pd.DataFrame:
    ids = [p.stem for p in paths]
    if len(set(ids)) != len(ids):
        raise PoolError("pool photos must have distinct file names (their stem is the listing id)")
    return pd.DataFrame({"listing_id": ids, "path": [str(p) for p in paths],
                         "sha256": [_sha256(p) for p in paths], "source_manifest": ""})


def pool_from_dir(directory: str | Path) -> pd.DataFrame:
    """A generated batch (its manifest names the photos; labels are ignored) or a folder of photos."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise PoolError(f"pool {directory} is not a directory")
    if (directory / mf.MANIFEST_NAME).exists():
        rows = mf.read_manifest(directory)
        return pd.DataFrame({"listing_id": rows["listing_id"], "path": [str(directory / r) for r in rows["image"]],
                             "sha256": rows["sha256"], "source_manifest": str(directory / mf.MANIFEST_NAME)})
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise PoolError(f"pool {directory} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return _from_paths(paths)


def pool_from_prediction_log(root: Path, params: Params) -> pd.DataFrame:
    """The photos the service archived (column ``image_path`` of the prediction log), oldest first, once each."""
    from sqlalchemy.exc import SQLAlchemyError

    from monitoring.prediction_log import PredictionLog, resolve_url

    url = resolve_url(params.serving.prediction_log, root)
    hint = "pass --pool DIR (a folder of unlabelled photos, e.g. one `reviewops generate` wrote)"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise PoolError(f"no prediction log at {url}: {hint}")
    log = PredictionLog(url)
    try:
        logged = log.read()["image_path"].dropna()
    except SQLAlchemyError as exc:
        raise PoolError(f"cannot read the prediction log {url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        log.close()
    paths = [p if p.is_absolute() else root / p for p in map(Path, dict.fromkeys(logged))]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise PoolError(f"the prediction log {url} names no archived photo that is still on disk "
                        f"(serving.photo_archive keeps them): {hint}")
    return _from_paths(paths)


def load_pool(root: Path, params: Params, pool: str | Path | None = None) -> pd.DataFrame:
    """The unlabelled photos to score: ``pool`` or the prediction log, minus versioned photos, capped."""
    df = pool_from_dir(pool) if pool is not None else pool_from_prediction_log(root, params)
    labelled = set(versioned_manifest(root)["sha256"])
    df = df[~df["sha256"].isin(labelled)]
    if df.empty:
        raise PoolError("every photo of the pool is already in the versioned data: nothing to label")
    cap = params.active_learning.pool_size
    return (df.tail(cap) if pool is None else df.head(cap)).reset_index(drop=True)  # the log: its newest


# --- scores, embeddings and the choice ---------------------------------------------------------------

def uncertainty(p: np.ndarray) -> np.ndarray:
    """``1 - |2p - 1|``: 1 for a coin flip, 0 for a sure answer."""
    return 1.0 - np.abs(2.0 * np.asarray(p, dtype=np.float64) - 1.0)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def score(root: Path, params: Params, df: pd.DataFrame, family: str,
          category: str | None) -> tuple[np.ndarray, np.ndarray, str, list | None]:
    """(probability, uncertainty, model version, dirt boxes or None) per photo, from the trained models.

    Prohibited: the category classifier's probability p, uncertainty ``1 - |2p - 1|``. Dirt: the defects
    net's dirt probability p and every YOLO dirt box the detector finds (at ``train.detector.conf``); the
    uncertainty is the larger of the net's ``1 - |2p - 1|`` and that of its least sure box (a box at
    confidence 0.5 is a coin flip), so a photo is asked about when either model hesitates.
    """
    if family == "prohibited":
        model = prohibited.load_combined(root, params, [category])
        version = _digest(model_dir("prohibited", root) / category / "model.pt")
        p = prohibited.probabilities(root, params, df, model)[:, 0]
        return p, uncertainty(p), f"prohibited:{category}@{version}", None
    p = detector.defect_scores(root, params, df)["dirt_score"].to_numpy()
    boxes = dirt_boxes(root, params, list(df["path"]))
    box_unc = np.array([max((float(uncertainty(b[4])) for b in found), default=0.0) for found in boxes])
    version = f"detector:defects@{_digest(model_dir('detector', root) / f'{detector.DEFECTS}.pt')}" \
              f"+yolo@{_digest(detector.model_path(root))}"
    return p, np.maximum(uncertainty(p), box_unc), version, boxes


def grid_embedding(x: torch.Tensor) -> np.ndarray:
    """Trunk outputs [N, C, H, W] averaged over a 4 x 4 grid (the photo's layout counts), L2-normalised."""
    grid = torch.nn.functional.adaptive_avg_pool2d(x.float(), EMBEDDING_GRID).flatten(1)
    return torch.nn.functional.normalize(grid, dim=1).numpy()


def embeddings(root: Path, params: Params, df: pd.DataFrame) -> np.ndarray:
    """The grid embedding of the prohibited family's frozen trunk output (the cached features)."""
    trunk = Trunk(params.train.prohibited.trunk_split, pretrained=params.train.pretrained)
    return grid_embedding(common.features(root, params, trunk, df, size=params.train.input_size("prohibited")))


def _hash_bytes(hashes: list[str | None]) -> np.ndarray:
    """Hex pHashes as rows of bytes (an undecodable photo's None as all ones: far from every photo)."""
    return np.array([np.frombuffer(bytes.fromhex(h), np.uint8) if h else np.full(32, 255, np.uint8)
                     for h in hashes], dtype=np.uint8).reshape(len(hashes), -1)


def _bit_distance(row: np.ndarray, rows: np.ndarray) -> int:
    """Smallest Hamming distance between one hash and a set of hashes (as bytes)."""
    return int(np.unpackbits(np.bitwise_xor(rows, row), axis=1).sum(1).min())


def pick(order, emb: np.ndarray, k: int, max_distance: float, phash, max_bits: int,
         frozen: list[str]) -> tuple[list[int], int, int]:
    """Walk ``order`` and keep up to ``k`` photos. A photo is a near-duplicate of a kept one when their
    embeddings are within ``max_distance`` (cosine) or their pHashes (``phash(i)``, hex) within ``max_bits``;
    it is refused when its pHash is within ``max_bits`` of a ``frozen`` test photo.
    Returns (kept indices, near-duplicates skipped, near-copies of test photos skipped)."""
    kept: list[int] = []
    kept_emb = np.zeros((max(k, 0), emb.shape[1]), dtype=emb.dtype)
    kept_hash = np.zeros((max(k, 0), 32), dtype=np.uint8)
    frozen_hash = _hash_bytes(list(frozen)) if len(frozen) else None
    duplicates = near_test = 0
    for i in map(int, order):
        n = len(kept)
        if n >= k:
            break
        if n and float((1.0 - kept_emb[:n] @ emb[i]).min()) <= max_distance:
            duplicates += 1
            continue
        h = _hash_bytes([phash(i)])
        if n and _bit_distance(h, kept_hash[:n]) <= max_bits:
            duplicates += 1
        elif frozen_hash is not None and _bit_distance(h, frozen_hash) <= max_bits:
            near_test += 1
        else:
            kept.append(i)
            kept_emb[n], kept_hash[n] = emb[i], h[0]
    return kept, duplicates, near_test


def dirt_boxes(root: Path, params: Params, paths: list[str]) -> list[list[tuple[float, ...]]]:
    """Per photo, the YOLO dirt boxes ``(x0, y0, x1, y1, confidence)`` (normalised) at or above ``train.detector.conf``."""
    model = detector.load_detector(root, params.train.threads)
    found = {}
    for result in model.predict(source=list(paths), stream=True, conf=params.train.detector.conf,
                                imgsz=detector.image_size(params), batch=params.train.detector.batch,
                                device="cpu", verbose=False):
        b = result.boxes
        dirt = b.cls.numpy().astype(int) == detector.CLASS_ID["dirt"]
        found[str(Path(result.path).absolute())] = [(*map(float, xy), float(c)) for xy, c in
                                                    zip(b.xyxyn.numpy()[dirt], b.conf.numpy()[dirt])]
    return [found[str(Path(p).absolute())] for p in paths]


# --- Label Studio ----------------------------------------------------------------------------------

def control_name(family: str, category: str | None) -> str:
    """The ``from_name`` of the answer: the category (a yes/no choice) or ``dirt`` (rectangles)."""
    return category if family == "prohibited" else "dirt"


def label_config(family: str, category: str | None) -> str:
    """The labeling interface that matches the tasks' pre-annotations."""
    name = quoteattr(control_name(family, category))
    if family == "prohibited":
        return (f'<View>\n  <Header value={quoteattr(f"Does the photo show {category}?")}/>\n'
                f'  <Image name="image" value="$image" zoom="true"/>\n'
                f'  <Choices name={name} toName="image" choice="single" showInline="true" required="true">\n'
                f'    <Choice value="yes"/>\n    <Choice value="no"/>\n  </Choices>\n</View>\n')
    return ('<View>\n  <Header value="Draw a box around every dirt spot on the product; none: submit with no box"/>\n'
            '  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name={name} toName="image" canRotate="false">\n'
            '    <Label value="dirt" background="red"/>\n  </RectangleLabels>\n</View>\n')


def rectangle(box: tuple[float, ...], width: int, height: int, name: str = "dirt", rid: str = "") -> dict:
    """A Label Studio ``rectanglelabels`` region from a normalised ``(x0, y0, x1, y1[, conf])`` box."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box[:4])
    region = {"id": rid, "from_name": name, "to_name": "image", "type": "rectanglelabels",
              "original_width": int(width), "original_height": int(height), "image_rotation": 0,
              "value": {"x": 100 * x0, "y": 100 * y0, "width": 100 * (x1 - x0), "height": 100 * (y1 - y0),
                        "rotation": 0, "rectanglelabels": ["dirt"]}}
    if len(box) > 4:
        region["score"] = float(box[4])
    return region


def task(row, url: str, queue: str, family: str, category: str | None, version: str, boxes) -> dict:
    """One Label Studio task: the photo, ids to find it again, and the model's pre-annotation."""
    name = control_name(family, category)
    if family == "prohibited":
        result = [{"id": f"{row.listing_id}-choice", "from_name": name, "to_name": "image", "type": "choices",
                   "value": {"choices": ["yes" if row.score >= 0.5 else "no"]}}]
    else:
        with Image.open(row.path) as im:
            width, height = im.size
        result = [rectangle(b, width, height, name, f"{row.listing_id}-{j}") for j, b in enumerate(boxes)]
    return {"data": {"image": url, "listing_id": row.listing_id, "queue": queue},
            "predictions": [{"model_version": version, "score": float(1.0 - row.uncertainty), "result": result}]}


# --- the queue ---------------------------------------------------------------------------------------

def folder_name(stamp: str) -> str:
    """A queue's folder name from a stamp (an Airflow run id such as ``scheduled__2026-01-05T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stamp).strip("-.")


def queue_dir(root: Path, family: str, category: str | None, stamp: str) -> Path:
    return root / ANNOTATION_DIR / (f"{family}-{category}" if category else family) / stamp


def _write_queue(root: Path, dest: Path, picked: pd.DataFrame, family: str, category: str | None, version: str,
                 boxes: list | None) -> None:
    """Photos, queue.csv, label_studio.json, label_config.xml; written aside, then moved into place."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rel_queue = dest.relative_to(root).as_posix()
    rows, tasks = [], []
    for j, row in enumerate(picked.itertuples(index=False)):
        name = f"images/{row.listing_id}{Path(row.path).suffix.lower()}"
        shutil.copyfile(row.path, tmp / name)
        rel = f"{rel_queue}/{name}"
        rows.append({"rank": row.rank, "listing_id": row.listing_id, "path": rel, "score": row.score,
                     "uncertainty": row.uncertainty, "source": row.path, "source_manifest": row.source_manifest,
                     "sha256": row.sha256})
        tasks.append(task(row, LOCAL_FILES + rel, rel_queue, family, category, version,
                          boxes[j] if boxes is not None else None))
    pd.DataFrame(rows).to_csv(tmp / "queue.csv", index=False, float_format="%.6f")
    (tmp / "label_studio.json").write_text(json.dumps(tasks, indent=1) + "\n")
    (tmp / "label_config.xml").write_text(label_config(family, category))
    shutil.rmtree(dest, ignore_errors=True)  # a retried run with the same stamp replaces its own queue
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)


def select_queue(root: str | Path, family: str, category: str | None = None, *, k: int | None = None,
                 pool: str | Path | None = None, stamp: str | None = None, strategy: str = "uncertainty",
                 seed: int | None = None, params: Params | None = None) -> Queue:
    """Score the pool, choose ``k`` photos (most uncertain first, no near-duplicates), write the queue."""
    root = Path(root).resolve()
    params = params or load_params(root / "params.yaml")
    check_target(params, family, category)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    stamp = folder_name(stamp) if stamp else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    k = k or params.active_learning.k
    df = load_pool(root, params, pool)
    p, unc, version, boxes = score(root, params, df, family, category)
    order = np.argsort(-unc, kind="stable") if strategy == "uncertainty" else \
        np.random.default_rng(params.seed if seed is None else seed).permutation(len(df))
    paths = list(df["path"])
    kept, duplicates, near_test = pick(order, embeddings(root, params, df), k, params.active_learning.duplicate_distance,
                                       lambda i: phash_file(paths[i]), params.validation.phash_max_distance,
                                       frozen_test_phashes(root))
    picked = df.iloc[kept].assign(score=p[kept], uncertainty=unc[kept], rank=np.arange(1, len(kept) + 1))
    if boxes is not None:   # the annotator's rectangles are pre-filled with the boxes YOLO is fairly sure of
        floor = params.active_learning.box_confidence
        boxes = [[b for b in boxes[i] if b[4] >= floor] for i in kept]
    dest = queue_dir(root, family, category, stamp)
    _write_queue(root, dest, picked, family, category, version, boxes)
    return Queue(dest, family, category, strategy, len(kept), len(df), duplicates, near_test, version)


# --- answers back: a Label Studio export becomes an incoming batch ---------------------------------------

def answers(export: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(task data, result) of every task with a submitted annotation; the latest annotation counts."""
    out = []
    for t in export:
        done = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if done:
            out.append((t["data"], done[-1].get("result") or []))
    return out


def _answer_choice(result: list[dict], name: str) -> bool | None:
    for r in result:
        if r.get("from_name") == name and r.get("type") == "choices" and r["value"].get("choices"):
            return r["value"]["choices"][0] == "yes"
    return None


def _answer_boxes(result: list[dict], name: str) -> list[dict]:
    boxes = []
    for r in result:
        if r.get("from_name") == name and r.get("type") == "rectanglelabels":
            v = r["value"]
            x0, y0 = max(0.0, v["x"] / 100), max(0.0, v["y"] / 100)
            x1, y1 = min(1.0, (v["x"] + v["width"]) / 100), min(1.0, (v["y"] + v["height"]) / 100)
            if x1 > x0 and y1 > y0:
                boxes.append({"label": "dirt", "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return boxes


def apply_answer(row: dict, family: str, category: str | None, result: list[dict]) -> dict | None:
    """The manifest row with the annotator's answer in place of the asked label (None: not answered)."""
    row = dict(row)
    if family == "prohibited":
        yes = _answer_choice(result, category)
        if yes is None:
            return None
        row["prohibited"] = [c for c in row["prohibited"] if c != category] + ([category] if yes else [])
        row["boxes"] = [b for b in row["boxes"] if yes or b["label"] != f"prohibited:{category}"]
    else:
        drawn = _answer_boxes(result, "dirt")
        row["dirt"] = bool(drawn)
        row["boxes"] = [b for b in row["boxes"] if b["label"] != "dirt"] + drawn
    return row


def _queue_target(queue: str) -> tuple[str, str | None]:
    name = Path(queue).parent.name
    family, _, category = name.partition("-")
    return family, category or None


def import_labels(export_json: str | Path, root: str | Path | None = None, batch_id: str | None = None) -> Path:
    """Label Studio's JSON export of answered tasks -> ``data/incoming/<batch_id>/`` (photos + manifest).

    Default batch id: ``al-<family>[-<category>]-<queue stamp>`` (one queue per export). Tasks with no
    submitted annotation are left out; a photo already in the versioned data is left out (its label
    is there); a photo without a source manifest is refused (see the module doc). The batch carries
    ``selection.json``: the queues, the export (path and SHA-256) and the counts. Such a batch is
    enriched in the rare label by design, which the validation suite's prevalence bounds (set for
    random batches) may refuse.
    """
    root = Path(root or Path.cwd()).resolve()
    answered = answers(json.loads(Path(export_json).read_text()))
    if not answered:
        raise PoolError(f"{export_json} holds no submitted annotation")
    queues = sorted({data["queue"] for data, _ in answered})
    if batch_id is None:
        if len(queues) != 1:
            raise PoolError(f"the export spans {len(queues)} queues {queues}: name the batch (batch_id)")
        batch_id = f"al-{Path(queues[0]).parent.name}-{Path(queues[0]).name}"
    dest = root / INCOMING_DIR / batch_id
    if dest.exists():
        raise FileExistsError(f"{dest} already exists: import into another batch id")
    listed = {q: pd.read_csv(root / q / "queue.csv", keep_default_na=False).set_index("listing_id") for q in queues}
    labelled = set(versioned_manifest(root)["sha256"])
    sources: dict[str, pd.DataFrame] = {}
    rows, photos, unlabelled, known = [], [], [], 0
    for data, result in answered:
        entry = listed[data["queue"]].loc[data["listing_id"]]
        if entry["sha256"] in labelled:
            known += 1
            continue
        if not entry["source_manifest"]:
            unlabelled.append(data["listing_id"])
            continue
        if entry["source_manifest"] not in sources:
            sources[entry["source_manifest"]] = mf.read_manifest(Path(entry["source_manifest"]).parent) \
                .set_index("listing_id", drop=False)
        family, category = _queue_target(data["queue"])
        row = apply_answer(sources[entry["source_manifest"]].loc[data["listing_id"]].to_dict(), family, category, result)
        if row is None:
            continue
        image = f"{mf.IMAGES_DIR}/{data['listing_id']}{Path(entry['path']).suffix}"
        rows.append({**{c: row[c] for c in mf.COLUMNS}, "batch": batch_id, "image": image})
        photos.append((root / entry["path"], image))
    if unlabelled:
        raise PoolError(f"{len(unlabelled)} answered photos (first: {unlabelled[:3]}) have no source manifest: a "
                        f"batch row needs every label of pipelines/data/manifest.py (blur votes, SKU, stickers, ...) and "
                        f"the annotators gave one; label them in a full review task instead")
    if not rows:
        raise PoolError(f"{export_json}: no answered photo is new to the versioned data")
    tmp = dest.with_name(f".{batch_id}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / mf.IMAGES_DIR).mkdir(parents=True)
    for src, image in photos:
        shutil.copyfile(src, tmp / image)
    mf.write_manifest(pd.DataFrame(rows), tmp)
    provenance = {"selected_by": "active_learning", "queues": queues, "export": str(Path(export_json).resolve()),
                  "export_sha256": _sha256(Path(export_json)), "answered": len(answered), "imported": len(rows),
                  "already_versioned": known, "without_answer": len(answered) - len(rows) - known,
                  "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / SELECTION_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
    tmp.rename(dest)
    return dest
