"""Detector: an ultralytics YOLO (from its yaml, no pretrained weights) that finds the product, its
anti-tamper stickers and dirt spots, and two image-level checks, "sticker missing" and "dirt present".

Why the two checks are not read off the YOLO boxes alone. Stickers and dirt spots are a few pixels
wide in a 256 px photo; a YOLO trained from scratch for a few CPU epochs finds the product (mAP50
0.99 on the demo test split) but not them: on the demo data, 8 epochs left sticker and dirt mAP50 at
0.0 and both box-rule scores at AUC 0.5. The checks are therefore scored by ``models/detector/
defects.pt``: the frozen ImageNet trunk at full resolution (``train.defects``) with a small trained
tail and two logits, sticker missing (trained and scored only on photos that should show stickers)
and dirt (photos with a product), fitted by the shared harness. The box-rule scores below are still
measured and reported beside them (``test.box_rule``), so the comparison stays visible as the
detector gets more training.

Data. The versioned photos are exported to the YOLO layout under ``.cache/yolo/data/<split>/``:
``images/<listing_id>.jpg`` are symlinks to the versioned JPEGs and ``labels/<listing_id>.txt`` hold
one ``class cx cy w h`` line (normalised) per box of class 0 product, 1 sticker, 2 dirt (prohibited
boxes belong to another family). A split's folder is deleted and rebuilt on every run, so the export
never drifts from the manifest; ``.cache/yolo/data/detector.yaml`` names them with absolute paths (no
ultralytics ``datasets_dir`` is involved). Training reads train (fit) and val (best epoch);
evaluation exports test only to measure it. Runs go to ``.cache/yolo/runs/``; ``best.pt`` is copied
to ``models/detector/best.pt``, the DVC output.

Training uses SGD: ultralytics' default ``optimizer='auto'`` ignores ``lr0`` (it picks AdamW and its
own rate on short runs), so the optimizer is fixed for ``train.detector.lr0`` to mean something.

Offline. ultralytics reaches for the network in a few places: a DNS probe at import (``ONLINE``)
that gates analytics and update checks, ``check_font`` (fetches Arial.ttf on every dataset check),
the AMP check (downloads weights) and plots (fonts). Here ``YOLO_OFFLINE=1`` is set before the first
import, analytics are switched off, the dataset check's font fetch is replaced by a no-op, and
training runs with ``amp=False, plots=False``. ultralytics also pins torch to ``cpu_count - 1``
threads on CPU; callbacks set ``train.threads`` back.

Device. Training, validation and prediction run on ``train.device`` (:mod:`pipelines.train.device`:
``"cpu"``, or the CUDA index for ultralytics); the ONNX export of ``export_yolo`` and its parity check
stay on the CPU, as the service runs it.

Box rules (pure functions, shared with the service):

* sticker missing, on photos that should show stickers (``stickers_expected > 0``; at serving time
  the expected count comes from the claimed SKU's catalogue entry): ``1 -`` the confidence of the
  k-th most confident sticker box, k the expected count (0 when fewer boxes), so one missing
  sticker out of two scores high even when the other is found with confidence;
* dirt, on photos with a product: the highest dirt-box confidence;
* centring, on photos with a product: the most confident product box's centre offset from the
  image centre; off centre beyond ``labels.centering_tolerance`` or when the box touches the border
  (cut by the frame). No product box found counts as flagged: the photo cannot be confirmed centred.

Thresholds of the two scores are chosen on validation for ``recall_targets``, with
``recall_targets.extra_positives`` generated photos of the defect beside validation's positives
(:func:`calibration_positives`); test is only measured.
mAP50 per class comes from ultralytics' own validator run on the test split.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import (binary_metrics, calibrate_with_extra, generated_positives, model_dir,
                                      pr_curve, write_metrics, write_plot)
from pipelines.params import Params
from pipelines.serve.images import resize
from pipelines.train.evaluate import metric
from pipelines.train import device as devices
from pipelines.train.graphs import Bundle, Graph, Probability
from pipelines.serve.decision import centring, flagged
from pipelines.train.families import common, scalar

os.environ.setdefault("YOLO_OFFLINE", "1")  # read once, when ultralytics is first imported
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install at run time (no registry in serving)

FAMILY = "detector"
CLASSES = ("product", "sticker", "dirt")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
WORK_DIR = Path(".cache/yolo")
DATA_YAML = "detector.yaml"
OPTIMIZER = "SGD"                 # fixed: ultralytics' "auto" ignores lr0 (see the module docstring)


# --- ultralytics, offline ---------------------------------------------------------------------------

def _no_font_download(font: str = "Arial.ttf"):
    """Stands in for ultralytics' dataset-check font fetch: nothing here draws text."""
    return None


def _yolo_class():
    """ultralytics' ``YOLO``, imported with every network path this module can reach switched off."""
    import ultralytics.data.utils as data_utils
    from ultralytics import YOLO
    from ultralytics.utils.events import events

    events.enabled = False
    data_utils.check_font = _no_font_download
    return YOLO


def _use_threads(model, threads: int) -> None:
    """ultralytics' device selection resets torch to cpu_count - 1 threads: set ours back after it."""
    import torch

    def _set(_):
        torch.set_num_threads(threads)

    for event in ("on_pretrain_routine_start", "on_val_start", "on_predict_start"):
        model.add_callback(event, _set)


def model_yaml(name: str) -> str:
    """``train.detector.model``: a yaml shipped beside this module (``yolov8p.yaml``) or one of ultralytics'."""
    local = Path(__file__).with_name(name)
    return str(local) if local.exists() else name


def model_path(root: Path) -> Path:
    return model_dir(FAMILY, root) / "best.pt"


def load_detector(root: Path, threads: int | None = None):
    """The trained YOLO of ``models/detector/best.pt`` (for evaluation and the service), on the CPU until a
    call with ``device=`` moves it."""
    path = model_path(Path(root))
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `reviewops train detector` (or `dvc repro`) first")
    model = _yolo_class()(str(path))
    if threads:
        _use_threads(model, threads)
    return model


def image_size(params: Params) -> int:
    """``train.detector.imgsz``, capped by the profile's ``image_size``, as a multiple of the stride 32."""
    size, cap = params.train.detector.imgsz, params.train.caps.image_size
    size = size if cap is None else min(size, cap)
    return max(32, size // 32 * 32)


# --- export to the YOLO layout ----------------------------------------------------------------------

def yolo_lines(boxes) -> list[str]:
    """``class cx cy w h`` lines (normalised, clipped to the image) of the detector's classes in ``boxes``."""
    lines = []
    for box in boxes:
        cls = CLASS_ID.get(box["label"])
        if cls is None:
            continue
        x0, y0, x1, y1 = (min(1.0, max(0.0, float(box[k]))) for k in ("x0", "y0", "x1", "y1"))
        if x1 <= x0 or y1 <= y0:
            continue
        lines.append(f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
    return lines


def export_split(root: Path, df: pd.DataFrame, split: str) -> Path:
    """Rebuild ``.cache/yolo/data/<split>/{images,labels}`` from the manifest rows of ``split``."""
    out = root / WORK_DIR / "data" / split
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    rows = split_frame(df, split)
    if rows.empty:
        raise ValueError(f"the {split} split has no photos: cannot train or measure the detector")
    for row in rows.itertuples():
        (out / "images" / f"{row.listing_id}.jpg").symlink_to(Path(row.path).absolute())
        lines = yolo_lines(row.boxes)
        (out / "labels" / f"{row.listing_id}.txt").write_text("".join(f"{line}\n" for line in lines))
    return out


def data_yaml(root: Path) -> Path:
    """The dataset yaml, absolute paths only; a split folder is only required once that split is read."""
    base = (root / WORK_DIR / "data").absolute()
    path = base / DATA_YAML
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {"path": str(base), **{s: str(base / s / "images") for s in ("train", "val", "test")},
            "names": dict(enumerate(CLASSES))}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _runs(root: Path) -> Path:
    return (root / WORK_DIR / "runs").absolute()


# --- train ------------------------------------------------------------------------------------------

def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "results.csv"
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    frame.columns = [c.strip() for c in frame.columns]
    return frame.round(5).to_dict("records")


class _EpochTimer:
    """Seconds of each epoch's training pass (validation excluded), from the trainer's callbacks."""

    def __init__(self, model):
        self.seconds: list[float] = []
        self._start = 0.0
        model.add_callback("on_train_epoch_start", self._begin)
        model.add_callback("on_train_epoch_end", self._end)

    def _begin(self, _):
        self._start = time.perf_counter()

    def _end(self, _):
        self.seconds.append(time.perf_counter() - self._start)


def train(root: Path, params: Params) -> dict:
    """Export train and val, train YOLO from its yaml with ultralytics' trainer, keep its best.pt."""
    started = time.perf_counter()
    df = common.load_frame(root)
    settings = params.train.family(FAMILY)
    device = common.device(params)
    imgsz = image_size(params)
    for split in ("train", "val"):
        export_split(root, df, split)
    data = data_yaml(root)
    shutil.rmtree(_runs(root) / "train", ignore_errors=True)

    model = _yolo_class()(model_yaml(settings.model))
    _use_threads(model, params.train.threads)
    timer = _EpochTimer(model)
    model.train(data=str(data), epochs=settings.epochs, imgsz=imgsz, batch=settings.batch, patience=settings.patience,
                optimizer=OPTIMIZER, lr0=settings.lr0, device=devices.yolo(device), workers=0, plots=False, amp=False,
                seed=params.seed, deterministic=True, exist_ok=True, project=str(_runs(root)), name="train",
                verbose=True)
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
    out = model_path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(best, tmp)
    tmp.replace(out)

    yolo_seconds = round(time.perf_counter() - started, 1)
    defects = train_defects(root, params)

    n_train = int((df["split"] == "train").sum())
    pass_seconds = float(np.mean(timer.seconds)) if timer.seconds else math.nan
    return common.write_train_record(
        FAMILY, root, started, df, device, yolo_seconds=yolo_seconds, defects=defects, model=settings.model, epochs=settings.epochs, epochs_run=len(timer.seconds),
        imgsz=imgsz, batch=settings.batch, optimizer=OPTIMIZER, lr0=settings.lr0, patience=settings.patience,
        threads=params.train.threads, epoch_train_seconds=round(pass_seconds, 2),
        train_images_per_second=round(n_train / pass_seconds, 2),
        best_fitness=None if trainer.best_fitness is None else float(trainer.best_fitness),
        history=_history(Path(trainer.save_dir)))


# --- image-level checks: the defects net --------------------------------------------------------------

CHECKS = {  # check -> (rows it applies to, label column); the defects net has one logit per check, in order
    "sticker_missing": (lambda d: d["stickers_expected"] > 0, "sticker_missing"),
    "dirt": (lambda d: d["category"] != "none", "dirt"),
}
DEFECTS = "defects"  # models/detector/defects.pt
CALIBRATION = {"sticker_missing": ({"sticker_missing_rate": 1.0}, 59), "dirt": ({"dirt_rate": 1.0}, 61)}
                     # check -> (generator rates, salt) of its generated calibration positives


def defect_targets(df: pd.DataFrame) -> np.ndarray:
    """[N, 2] labels of the checks, NaN where a check does not apply (no sticker expected, no product)."""
    out = np.full((len(df), len(CHECKS)), np.nan, dtype=np.float32)
    for j, (applies, label) in enumerate(CHECKS.values()):
        mask = applies(df).to_numpy()
        out[mask, j] = df[label].to_numpy(np.float32)[mask]
    return out


def _mean_ap(pred: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    aps = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        yj = y[known, j]
        if 0 < yj.sum() < len(yj):
            aps.append(average_precision_score(yj, pred[known, j]))
    return float(np.mean(aps)) if aps else -1.0


def train_defects(root: Path, params: Params) -> dict:
    """Fit the two-logit defects net (shared harness, cached trunk features); its training record. With
    ``train.defects.extra_photos``, generated photos whose defects are made common (``extra_rates``) join the
    training split (:func:`pipelines.data.generate.enriched_photos`); validation stays the versioned split."""
    return scalar.train_scalar(FAMILY, root, params, lambda d: d, defect_targets, "bce", _mean_ap, salt=11,
                               name=DEFECTS, settings_key="defects")


def defect_scores(root: Path, params: Params, df: pd.DataFrame) -> pd.DataFrame:
    """Per photo of ``df``: the probability of each check (``<check>_score``)."""
    probs = scalar.scores(FAMILY, root, params, df, name=DEFECTS).reshape(len(df), len(CHECKS))
    return pd.DataFrame({f"{name}_score": probs[:, j] for j, name in enumerate(CHECKS)}, index=df.index)


# --- image-level checks from boxes (pure) -----------------------------------------------------------

def sticker_missing_score(sticker_confs: list[float], expected: int) -> float:
    """``1 -`` the confidence of the ``expected``-th most confident sticker box (0 when there are fewer).

    High when at least one expected sticker is not found. ``expected <= 0``: no sticker check, 0.
    """
    if expected <= 0:
        return 0.0
    confs = sorted((float(c) for c in sticker_confs), reverse=True)
    return 1.0 - (confs[expected - 1] if len(confs) >= expected else 0.0)


def dirt_score(dirt_confs: list[float]) -> float:
    """The most confident dirt box (0 with none)."""
    return float(max(dirt_confs, default=0.0))


# --- evaluate ---------------------------------------------------------------------------------------

def auto_pass_share(df: pd.DataFrame, nets: pd.DataFrame, boxes: pd.DataFrame, thresholds: dict) -> float:
    """Share of the photos of ``df`` that none of the family's three checks flags (as served)."""
    flags = np.zeros(len(df), dtype=bool)
    for name, (applies, _) in CHECKS.items():
        flags |= applies(df).to_numpy() & flagged(nets[f"{name}_score"].to_numpy(), thresholds[name])
    flags |= (df["category"] != "none").to_numpy() & boxes["off_centre_flag"].to_numpy(bool)
    return float(1.0 - flags.mean()) if len(df) else float("nan")


def detect(model, paths: list[str], params: Params) -> list[dict]:
    """Per photo (in the order of ``paths``): confidences of sticker and dirt boxes, the top product box."""
    settings = params.train.detector
    if not paths:
        return []
    found = {}
    for result in model.predict(source=list(paths), stream=True, conf=settings.conf, imgsz=image_size(params),
                                batch=settings.batch, device=devices.yolo(common.device(params)), verbose=False):
        boxes = result.boxes.cpu()
        cls, conf, xyxyn = (boxes.cls.numpy().astype(int), boxes.conf.numpy().astype(float),
                            boxes.xyxyn.numpy().astype(float))
        product = np.flatnonzero(cls == CLASS_ID["product"])
        top = product[np.argmax(conf[product])] if len(product) else None
        found[str(Path(result.path).absolute())] = {
            "sticker": conf[cls == CLASS_ID["sticker"]].tolist(),
            "dirt": conf[cls == CLASS_ID["dirt"]].tolist(),
            "product": None if top is None else tuple(xyxyn[top].tolist()),
        }
    return [found[str(Path(p).absolute())] for p in paths]


def image_scores(df: pd.DataFrame, detections: list[dict], params: Params) -> pd.DataFrame:
    """The three checks per photo of ``df`` from its detections (centring as the service decides it)."""
    rows = []
    for expected, det in zip(df["stickers_expected"], detections):
        centre = centring(det["product"], params.labels.centering_tolerance, params.labels.frame_border)
        dx, dy = centre["offset"] or (math.nan, math.nan)
        rows.append({"sticker_missing_score": sticker_missing_score(det["sticker"], int(expected)),
                     "dirt_score": dirt_score(det["dirt"]), "dx": dx, "dy": dy, "off_centre_flag": centre["flag"],
                     "product_found": centre["product_found"]})
    return pd.DataFrame(rows, index=df.index)


def centring_metrics(df: pd.DataFrame, scores: pd.DataFrame) -> dict:
    """Agreement of the centring flag with ``off_centre`` on photos with a product."""
    has = (df["category"] != "none").to_numpy()
    flag, label = scores["off_centre_flag"].to_numpy(bool)[has], df["off_centre"].to_numpy(bool)[has]
    found = scores["product_found"].to_numpy(bool)[has]
    err = np.abs(np.concatenate([(scores["dx"] - df["center_dx"]).to_numpy()[has][found],
                                 (scores["dy"] - df["center_dy"]).to_numpy()[has][found]]))
    tp = int((flag & label).sum())
    return {"accuracy": float((flag == label).mean()) if len(flag) else math.nan,
            "recall": tp / label.sum() if label.sum() else math.nan,
            "precision": tp / flag.sum() if flag.sum() else math.nan,
            "offset_mae": float(err.mean()) if len(err) else math.nan,
            "product_found_share": float(found.mean()) if len(found) else math.nan,
            "positives": int(label.sum()), "n": int(len(label))}


def _curve(scores, labels) -> pd.DataFrame:
    return pr_curve(scores, labels) if len(scores) else pd.DataFrame(columns=["threshold", "recall", "precision"])


def map50(model, root: Path, df: pd.DataFrame, params: Params) -> dict:
    """mAP50 per class and over all classes on the test split, from ultralytics' validator."""
    export_split(root, df, "test")
    metrics = model.val(data=str(data_yaml(root)), split="test", imgsz=image_size(params),
                        batch=params.train.detector.batch, device=devices.yolo(common.device(params)), workers=0,
                        plots=False, verbose=False,
                        project=str(_runs(root)), name="test", exist_ok=True)
    ap50 = dict(zip((int(i) for i in metrics.box.ap_class_index), (float(v) for v in metrics.box.ap50)))
    return {**{name: ap50.get(i, math.nan) for i, name in enumerate(CLASSES)}, "all": float(metrics.box.map50)}


def calibration_positives(root: Path, params: Params, name: str) -> pd.DataFrame:
    """``recall_targets.extra_positives[name]`` generated photos with the check's defect drawn on every one
    (:func:`pipelines.train.evaluate.generated_positives`): the rows the check applies to whose defect is labelled."""
    rates, salt = CALIBRATION[name]
    photos = generated_positives(root, params, name, rates, salt)
    if not len(photos):
        return photos
    applies, label = CHECKS[name]
    return photos[applies(photos).to_numpy() & photos[label].to_numpy(bool)]


def _check_metrics(frames: dict, scores: dict, name: str, params: Params, s_extra=()) -> tuple:
    """Threshold on validation (and ``s_extra``, generated positives' scores) for the check's recall target, then
    its metrics on val and test."""
    applies, label = CHECKS[name]
    column = f"{name}_score"
    sel = {s: applies(d).to_numpy() for s, d in frames.items()}
    s_val, y_val = scores["val"][column].to_numpy()[sel["val"]], frames["val"][label].to_numpy(bool)[sel["val"]]
    s_test, y_test = scores["test"][column].to_numpy()[sel["test"]], frames["test"][label].to_numpy(bool)[sel["test"]]
    thr, source, calibration = calibrate_with_extra(s_val, y_val, s_extra, getattr(params.recall_targets, name),
                                                    params.recall_targets.confidence)
    return (thr, source, calibration, binary_metrics(s_val, y_val, thr), binary_metrics(s_test, y_test, thr),
            (s_test, y_test))


def evaluate(root: Path, params: Params) -> dict:
    model = load_detector(root, params.train.threads)
    df = common.load_frame(root)
    frames = {s: split_frame(df, s) for s in ("val", "test")}
    boxes = {s: image_scores(d, detect(model, list(d["path"]), params), params) for s, d in frames.items()}
    nets = {s: defect_scores(root, params, d) for s, d in frames.items()}

    thresholds, sources, calibration, test_flags, val_flags, box_rule = {}, {}, {}, {}, {}, {}
    for name in CHECKS:
        extra = calibration_positives(root, params, name)
        s_extra = defect_scores(root, params, extra)[f"{name}_score"].to_numpy() if len(extra) else np.zeros(0)
        thr, source, calibration[name], val_m, test_m, (s_test, y_test) = _check_metrics(frames, nets, name, params,
                                                                                         s_extra)
        thresholds[name], sources[name], val_flags[name], test_flags[name] = thr, source, val_m, test_m
        write_plot(FAMILY, f"pr_{name}", _curve(s_test, y_test), root)
        *_, box_test, _ = _check_metrics(frames, boxes, name, params)      # the boxes' rule: validation's alone
        box_rule[name] = box_test

    record = common.read_train_record(FAMILY, root)
    metrics = {
        "test": {"map50": map50(model, root, df, params), **test_flags,
                 "centring": centring_metrics(frames["test"], boxes["test"]), "box_rule": box_rule,
                 "auto_pass_share": auto_pass_share(frames["test"], nets["test"], boxes["test"], thresholds)},
        "val": {**val_flags, "centring": centring_metrics(frames["val"], boxes["val"])},
        "thresholds": thresholds,
        "threshold_source": sources,
        "calibration": calibration,
        "check_scores": {name: "defects net (models/detector/defects.pt)" for name in CHECKS},
        "recall_targets": {name: getattr(params.recall_targets, name) for name in CHECKS},
        "imgsz": image_size(params),
        "train_seconds": record["seconds"],
        "train_device": common.train_device(record),
        "data": {k: v for k, v in common.data_fingerprint(df).items() if k != "batches"},  # numbers only
    }
    write_metrics(FAMILY, metrics, root)
    return metrics


# --- what the rest asks of the family (pipelines.train.families.Family) ------------------------------

YOLO_FILE = "yolo.onnx"


def bundle(root: Path, params: Params) -> Bundle:
    """The defects net (one probability per check), the YOLO graph and the decision's settings from params.yaml."""
    net, arch = scalar.load_net(FAMILY, root, DEFECTS)
    meta = {"centering_tolerance": params.labels.centering_tolerance, "border": params.labels.frame_border,
            "sticker_required_categories": list(params.labels.sticker_required_categories),
            "box_confidence": params.serving.box_confidence, "max_boxes": params.serving.max_boxes,
            "yolo": {"file": YOLO_FILE, "imgsz": image_size(params), "conf": params.train.detector.conf,
                     "classes": list(CLASSES)}}
    return Bundle([Graph("defects", Probability(net), arch["image_size"], "scores", labels=list(CHECKS))], meta,
                  files={YOLO_FILE: lambda path: export_yolo(root, params, path)},
                  parity=lambda bundle_dir, photos: {"yolo": yolo_parity(root, params, bundle_dir / YOLO_FILE, photos)})


def export_yolo(root: Path, params: Params, out: Path) -> None:
    """ultralytics' own ONNX export of the trained detector (dynamic batch, on the CPU whatever
    ``train.device`` is), moved to ``out``."""
    model = load_detector(root, params.train.threads)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "yolo.pt"
        shutil.copy2(model_path(root), src)
        exported = type(model)(str(src)).export(format="onnx", imgsz=image_size(params), dynamic=True,
                                                simplify=False, device="cpu", verbose=False)
        shutil.move(exported, out)


def yolo_parity(root: Path, params: Params, onnx_path: Path, photos: np.ndarray) -> float:
    """Raw YOLO head outputs (boxes in pixels, class scores) of torch and ONNX on the same letterboxed input.

    Box coordinates are in pixels (up to the input size), so they are compared relative to the
    input size: a difference of 1e-4 is 1e-4 of the photo's side.
    """
    import onnxruntime as ort
    import torch

    size = image_size(params)
    model = load_detector(root, params.train.threads).model.float().eval()
    x = torch.from_numpy(np.ascontiguousarray(np.stack([resize(p, size) for p in photos]))).permute(0, 3, 1, 2)
    x = x.float().div(255.0)
    with torch.no_grad():
        expected = model(x)
    expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    scale = np.ones_like(expected)
    scale[:, :4] = size
    return float((np.abs(got - expected) / scale).max())


REVIEWER_DEFECTS = ("sticker_missing", "dirt", "off_centre")          # what the whole reviewer measures it on (pipelines/release/reviewer.py)


def gate_values(test: dict) -> tuple[dict[str, float], float]:
    return ({name: metric(test, f"{name}.recall") for name in ("sticker_missing", "dirt", "centring")},
            metric(test, "auto_pass_share"))


def summary(t: dict) -> str:
    return (f"mAP50 {_f(t['map50']['all'])}, sticker-missing recall {_f(t['sticker_missing']['recall'])}, "
            f"dirt recall {_f(t['dirt']['recall'])}, centring accuracy {_f(t['centring']['accuracy'])}")


def _f(value) -> str:
    return "n/a" if value is None else format(value, ".3f")
