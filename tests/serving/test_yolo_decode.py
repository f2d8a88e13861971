"""pipelines/serve/yolo.py (numpy + OpenCV + ONNX Runtime) against ultralytics' own predict on the same graph.

The detector is the project's model yaml (yolov8p) built by ultralytics and exported to ONNX the way
the release does (``export(format="onnx", dynamic=True, simplify=False)``). It is not trained: a few
CPU epochs leave every class score at its prior (about 0.0003 to 0.004, below any useful ``conf``),
and so does a random initialisation, whose activations fade through the eval-mode BatchNorms. So the
BatchNorm statistics are measured on the photos (one train-mode pass) and the last class conv of each
head level gets random weights: every photo then sends hundreds of overlapping candidates of varied
scores to NMS at the production ``conf`` (0.01), the case where a decoding slip shows.

Photos: scikit-image's bundled sample photos resized to 256 px (the size photos reach the models).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")          # read once, when ultralytics is first imported
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from pipelines.serve.yolo import YoloOnnx  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "stereo_motorcycle")
BOX_TOL, CONF_TOL = 1e-4, 1e-5
EXPORT_SIZE = 224                                    # the project's detector imgsz (params.yaml)


def model_yaml() -> Path:
    found = sorted(PROJECT.glob("pipelines/**/yolov8p.yaml"))
    assert found, "pipelines/**/yolov8p.yaml not found"
    return found[0]


def sample_photos(size: int = 256) -> np.ndarray:
    """uint8 RGB [8, size, size, 3] real photos."""
    import cv2
    import skimage.data

    photos = []
    for name in SAMPLES:
        im = getattr(skimage.data, name)()
        im = im[0] if isinstance(im, tuple) else im                              # stereo pair: the left view
        im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
        photos.append(cv2.resize(np.ascontiguousarray(im), (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(photos).astype(np.uint8)


def _yolo():
    from ultralytics import YOLO

    try:
        from ultralytics.utils.events import events
        events.enabled = False
    except ImportError:
        pass
    return YOLO


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return sample_photos()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, photos) -> dict[str, Path]:
    """The detector exported three ways: dynamic (the release's), fixed shape and batch, NMS inside the graph."""
    import torch

    YOLO = _yolo()
    tmp = tmp_path_factory.mktemp("yolo")
    torch.manual_seed(0)
    model = YOLO(str(model_yaml()), task="detect")
    net = model.model
    x = torch.from_numpy(photos[:, 16:240, 16:240].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None                    # cumulative: the statistics of this one batch
        net.train()
        net(x)
        net.eval()
        for level in net.model[-1].cv3:             # Detect: the class logits' last conv per stride
            level[-1].weight.normal_(0.0, 0.3)
            level[-1].bias.fill_(-5.0)
    model.save(str(tmp / "detector.pt"))
    out = {}
    for kind, extra in (("dynamic", {"dynamic": True}), ("static", {"dynamic": False}),
                        ("nms", {"dynamic": True, "nms": True})):
        src = tmp / f"{kind}.pt"
        shutil.copy2(tmp / "detector.pt", src)
        out[kind] = Path(YOLO(str(src)).export(format="onnx", imgsz=EXPORT_SIZE, simplify=False, device="cpu",
                                               verbose=False, **extra))
    return out


def ultralytics_boxes(onnx: Path, photos, imgsz: int, conf: float, **options) -> list[tuple]:
    """What the service got from ultralytics: cls, conf, xyxyn per photo (it passes BGR photos)."""
    results = _yolo()(str(onnx), task="detect").predict([np.ascontiguousarray(p[..., ::-1]) for p in photos],
                                                        imgsz=imgsz, conf=conf, device="cpu", verbose=False,
                                                        **options)
    return [(r.boxes.cls.numpy().astype(int), r.boxes.conf.numpy(), r.boxes.xyxyn.numpy()) for r in results]


def assert_same(ours: list[dict], theirs: list[tuple]) -> dict:
    """Same boxes photo by photo, row by row; returns the largest differences."""
    assert len(ours) == len(theirs)
    worst = {"box": 0.0, "conf": 0.0, "boxes": 0}
    for i, (o, (cls, conf, xyxyn)) in enumerate(zip(ours, theirs)):
        assert len(o["cls"]) == len(cls), f"photo {i}: {len(o['cls'])} boxes, ultralytics {len(cls)}"
        np.testing.assert_array_equal(o["cls"], cls, err_msg=f"photo {i}")
        assert o["xyxyn"].shape == (len(cls), 4) and o["conf"].shape == (len(cls),)
        if len(cls):
            worst["box"] = max(worst["box"], float(np.abs(o["xyxyn"] - xyxyn).max()))
            worst["conf"] = max(worst["conf"], float(np.abs(o["conf"] - conf).max()))
        worst["boxes"] += len(cls)
    assert worst["box"] <= BOX_TOL and worst["conf"] <= CONF_TOL, worst
    return worst


def candidates(yolo: YoloOnnx, photos) -> np.ndarray:
    """Per photo, the raw boxes whose best class score passes ``conf``: what reaches NMS."""
    y = yolo.forward(yolo.preprocess(list(photos)))
    return (y[:, 4:].max(1) > yolo.conf).sum(1)


@pytest.mark.parametrize("imgsz, conf, options", [
    (224, 0.01, {}),                                 # the project's detector settings
    (256, 0.01, {}),
    (224, 0.25, {}),                                 # ultralytics' default conf
    (224, 0.01, {"iou": 0.5, "max_det": 40, "agnostic": True}),
], ids=["224-0.01", "256-0.01", "224-0.25", "224-0.01-iou0.5-max40-agnostic"])
def test_same_boxes_as_ultralytics(graphs, photos, imgsz, conf, options):
    yolo = YoloOnnx(graphs["dynamic"], imgsz=imgsz, conf=conf, **options)
    assert yolo.dynamic and yolo.imgsz == (imgsz, imgsz)
    t = time.perf_counter()
    ours = yolo.detect(photos)
    seconds = time.perf_counter() - t
    theirs = {("agnostic_nms" if k == "agnostic" else k): v for k, v in options.items()}
    worst = assert_same(ours, ultralytics_boxes(graphs["dynamic"], photos, imgsz, conf, **theirs))
    reached = candidates(yolo, photos)
    print(f"\nimgsz {imgsz} conf {conf} {options}: {worst['boxes']} boxes kept of {reached.sum()} candidates, "
          f"max |d xyxyn| {worst['box']:.3g}, max |d conf| {worst['conf']:.3g}, detect {seconds * 1e3:.0f} ms; "
          f"candidates per photo {reached.tolist()}")
    assert worst["boxes"] > 0
    if conf == 0.01:                                 # NMS is really exercised: hundreds in, most suppressed
        assert reached.sum() >= 100 * len(photos) and reached.max() >= 300
        assert worst["boxes"] < reached.sum() / 2
    for o in ours:
        assert o["cls"].dtype == np.int64 and o["conf"].dtype == np.float32 and o["xyxyn"].dtype == np.float32
        assert np.all(np.diff(o["conf"]) <= 0)                                  # by descending confidence
        assert np.all((o["xyxyn"] >= 0) & (o["xyxyn"] <= 1))                    # clipped to the photo
        assert np.all(o["xyxy"][:, 2:] <= 256) and np.allclose(o["xyxy"] / 256, o["xyxyn"])


def test_non_square_and_mixed_shapes(graphs, photos):
    """One shape: LetterBox's minimum rectangle (auto) on a dynamic graph; mixed shapes: the full square."""
    yolo = YoloOnnx(graphs["dynamic"], imgsz=224, conf=0.01)
    tall = photos[:, :, 32:224]                                                 # 256 x 192
    assert yolo.preprocess(list(tall)).shape == (8, 3, 224, 192)               # not padded to 224 x 224
    assert_same(yolo.detect(tall), ultralytics_boxes(graphs["dynamic"], list(tall), 224, 0.01))
    mixed = [photos[0], photos[1][:200, :100], photos[2][:50], photos[3][7:, 3:250],
             photos[4][:, :195], photos[5][:99]]                                # odd padding: 26 | 27, 68 / 69
    assert yolo.preprocess(mixed).shape == (6, 3, 224, 224)
    worst = assert_same(yolo.detect(mixed), ultralytics_boxes(graphs["dynamic"], mixed, 224, 0.01))
    print(f"\nmixed shapes: {worst}")


def test_fixed_shape_graph_uses_its_export_size_and_batch(graphs, photos):
    """As in ultralytics: a static graph ignores imgsz (its own size wins) and runs in export-batch chunks."""
    yolo = YoloOnnx(graphs["static"], imgsz=256, conf=0.01)
    assert not yolo.dynamic and yolo.imgsz == (EXPORT_SIZE, EXPORT_SIZE) and yolo.batch == 1
    worst = assert_same(yolo.detect(photos[:3]), ultralytics_boxes(graphs["static"], photos[:3], 256, 0.01))
    print(f"\nfixed-shape graph: {worst}")


def test_graph_with_nms_inside_is_only_filtered(graphs, photos):
    yolo = YoloOnnx(graphs["nms"], imgsz=224, conf=0.3)
    assert yolo.end2end
    worst = assert_same(yolo.detect(photos), ultralytics_boxes(graphs["nms"], photos, 224, 0.3))
    print(f"\ngraph with NMS inside: {worst}")


def test_nms_keeps_what_torchvision_keeps_ties_included():
    """The NMS kernel alone against torchvision.ops.nms (what ultralytics' predict calls), tied scores included."""
    import torch
    import torchvision

    from pipelines.serve.yolo import MAX_WH, _nms

    rng = np.random.default_rng(0)
    for n in (1, 50, 2000):
        xy = rng.uniform(0, 224, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(2, 120, (n, 2)).astype(np.float32)], 1)
        boxes += (rng.integers(0, 3, (n, 1)) * MAX_WH).astype(np.float32)             # class offsets
        scores = (rng.integers(1, 30, n) / 30).astype(np.float32)                    # many ties
        for iou in (0.3, 0.7):
            expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
            np.testing.assert_array_equal(_nms(boxes, scores, iou), expected)


def test_options_and_input_checks(graphs, photos):
    yolo = YoloOnnx(graphs["dynamic"], imgsz=200, conf=0.01, max_det=5, threads=2)
    assert yolo.imgsz == (224, 224)                                             # up to a multiple of the stride
    assert yolo.session.get_session_options().intra_op_num_threads == 2
    assert max(len(o["cls"]) for o in yolo.detect(photos)) == 5
    assert yolo.detect(photos[:0]) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        yolo.detect(photos.astype(np.float32))
    with pytest.raises(ValueError, match="conf"):
        YoloOnnx(graphs["dynamic"], imgsz=224, conf=1.5)


def test_module_imports_without_torch_or_ultralytics():
    code = ("import sys, json; import pipelines.serve.yolo; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'ultralytics', 'timm'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120,
                          check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
