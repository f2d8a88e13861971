"""Export a trained family to an inference bundle: ONNX graphs, the files they need and ``meta.json``.

A bundle is what the registry stores and the reviewer service serves. Every CNN runs in ONNX
Runtime; the YOLO detector is exported by ultralytics and run by its ONNX Runtime backend (its
letterbox and NMS stay ultralytics'). ``parity`` checks each graph against torch on real photos.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipelines.data.dataset import split_frame
from pipelines.train.evaluate import read_metrics
from pipelines.train.families import common, detector, prohibited, scalar, sku
from pipelines.serve.images import load_resized, resize, to_input
from pipelines.release.onnx_export import export_dynamic_batch
from pipelines.params import Params

BUNDLE_META = "meta.json"
PARITY_TOLERANCE = 1e-4


class Probability(nn.Module):
    """sigmoid(net(x)): the bundle serves probabilities and scores, not logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


@dataclass
class Graph:
    name: str            # <name>.onnx in the bundle
    module: nn.Module    # photos [N, 3, size, size] in [-1, 1] -> outputs [N, ...]
    size: int


def _graphs(family: str, root: Path, params: Params) -> tuple[list[Graph], dict]:
    """The family's torch graphs and what its decisions need beside them (thresholds come from metrics)."""
    if family == "sku":
        net, arch, gallery = sku.load_model(root)
        df = common.load_frame(root)
        categories = df.drop_duplicates("sku_id").set_index("sku_id")["category"].to_dict()
        extra = {"gallery_skus": list(gallery["sku_id"]), "knn": params.train.sku.knn,
                 "sku_categories": {k: v for k, v in categories.items() if isinstance(k, str) and k}}
        return [Graph("sku", net, arch["image_size"])], {**extra, "_gallery": gallery["embeddings"].float().numpy()}
    if family in ("blur", "manipulation"):
        net, arch = scalar.load_net(family, root)
        return [Graph(family, Probability(net), arch["image_size"])], {}
    if family == "prohibited":
        model = prohibited.load_combined(root, params)
        return [Graph("prohibited", model, params.train.input_size("prohibited"))], {"categories": model.categories}
    if family == "detector":
        net, arch = scalar.load_net(family, root, detector.DEFECTS)
        extra = {"checks": list(detector.CHECKS), "imgsz": detector.image_size(params),
                 "conf": params.train.detector.conf, "classes": list(detector.CLASSES),
                 "centering_tolerance": params.labels.centering_tolerance, "border": detector.BORDER,
                 "sticker_required_categories": list(params.labels.sticker_required_categories)}
        return [Graph("defects", Probability(net), arch["image_size"])], extra
    raise ValueError(f"unknown model family {family!r}")


def _thresholds(family: str, root: Path) -> dict:
    metrics = read_metrics(family, root)
    return {k: float(v) for k, v in metrics["thresholds"].items()}


def _export_graph(graph: Graph, path: Path) -> None:
    export_dynamic_batch(graph.module, torch.zeros(2, 3, graph.size, graph.size), path, "photos", "out")


def _export_yolo(root: Path, params: Params, out: Path) -> None:
    model = detector.load_detector(root, params.train.threads)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "yolo.pt"
        shutil.copy2(detector.model_path(root), src)
        exported = type(model)(str(src)).export(format="onnx", imgsz=detector.image_size(params), dynamic=True,
                                                simplify=False, device="cpu", verbose=False)
        shutil.move(exported, out / "yolo.onnx")


def export_bundle(family: str, root: Path, params: Params, out: Path) -> dict:
    """Write ``out/`` (created) with the family's ONNX graphs and ``meta.json``; returns the meta."""
    out.mkdir(parents=True, exist_ok=True)
    graphs, extra = _graphs(family, root, params)
    for graph in graphs:
        _export_graph(graph, out / f"{graph.name}.onnx")
    if "_gallery" in extra:
        np.save(out / "gallery.npy", extra.pop("_gallery"))
    if family == "detector":
        _export_yolo(root, params, out)
    meta = {"family": family, "graphs": {g.name: {"file": f"{g.name}.onnx", "size": g.size} for g in graphs},
            "thresholds": _thresholds(family, root), **extra}
    (out / BUNDLE_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta


def parity_photos(root: Path, n: int = 8) -> np.ndarray:
    """``n`` real generated photos of the frozen test split (uint8, at the data's size)."""
    df = split_frame(common.load_frame(root), "test").sort_values("listing_id").head(n)
    size = int(df["width"].iloc[0]) if "width" in df else 256
    return load_resized(list(df["path"]), size)


def parity(family: str, root: Path, params: Params, bundle: Path, photos: np.ndarray) -> dict:
    """Largest |ONNX - torch| of every graph of the bundle on ``photos``; raises above the tolerance."""
    import onnxruntime as ort

    graphs, _ = _graphs(family, root, params)
    result = {}
    for graph in graphs:
        x = to_input(list(photos), graph.size)
        with torch.no_grad():
            expected = graph.module.eval()(x).numpy()
        session = ort.InferenceSession(str(bundle / f"{graph.name}.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        result[graph.name] = float(np.abs(got - expected).max())
    if family == "detector":
        result["yolo"] = _yolo_parity(root, params, bundle, photos)
    worst = max(result.values())
    if not worst <= PARITY_TOLERANCE:
        raise ValueError(f"{family}: ONNX differs from torch by {worst:.3g} (> {PARITY_TOLERANCE}) on real photos: "
                         f"{result}")
    return result


def _yolo_parity(root: Path, params: Params, bundle: Path, photos: np.ndarray) -> float:
    """Raw YOLO head outputs (boxes in pixels, class scores) of torch and ONNX on the same letterboxed input.

    Box coordinates are in pixels (up to the input size), so they are compared relative to the
    input size: a difference of 1e-4 is 1e-4 of the photo's side.
    """
    import onnxruntime as ort

    size = detector.image_size(params)
    model = detector.load_detector(root, params.train.threads).model.float().eval()
    x = torch.from_numpy(np.ascontiguousarray(np.stack([resize(p, size) for p in photos]))).permute(0, 3, 1, 2)
    x = x.float().div(255.0)
    with torch.no_grad():
        expected = model(x)
    expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
    session = ort.InferenceSession(str(bundle / "yolo.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    scale = np.ones_like(expected)
    scale[:, :4] = size
    return float((np.abs(got - expected) / scale).max())

