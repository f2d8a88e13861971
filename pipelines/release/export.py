"""Export a trained family to an inference bundle: ONNX graphs, the files they need and ``meta.json``.

A bundle is what the registry stores and the reviewer service serves (:mod:`pipelines.serve.bundle`
reads it). The family says what goes in (``families.get(name).bundle``: its graphs, files and
decision settings); thresholds come from its metrics. ``parity`` checks every graph against torch
on real photos, and the family's own extra checks (the YOLO decoding) beside them.

A graph on the frozen ImageNet trunk (every timm family's) is written in two parts: each stage of
the trunk as its own graph (``trunk/<id>.onnx``; the id names the backbone's weights, the input side
and the stage) and the family's part after the trunk (``<name>.onnx``, the trunk's output in). The
served reviewer runs a stage once per photo for every family whose trunk holds it
(:class:`pipelines.serve.models.ReviewerModels`): the families share their frozen stages at serving
as they share their cached features in training, without sharing a trained parameter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from pipelines.data.dataset import split_frame
from pipelines.params import Params
from pipelines.serve.bundle import BUNDLE_META, read_meta
from pipelines.serve.images import load_resized
from pipelines.train import families
from pipelines.train.evaluate import read_metrics
from pipelines.train.families import common
from pipelines.train.graphs import Bundle, FromFeatures, Graph, trunk_of
from pipelines.train.onnx_export import export_dynamic_batch
from pipelines.train.trunk import to_input


def _bundle(family: str, root: Path, params: Params) -> Bundle:
    return families.get(family).bundle(root, params)


def _thresholds(family: str, root: Path) -> dict:
    """The calibrated thresholds of the metrics; None where calibration had no positive (the check flags all)."""
    metrics = read_metrics(family, root)
    return {k: None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            for k, v in metrics["thresholds"].items()}


TRUNK_DIR = "trunk"


def _export_graph(graph: Graph, out: Path) -> dict:
    """Write the graph (its trunk stage by stage, then the rest, when it has a frozen trunk); returns its meta."""
    example = torch.zeros(2, 3, graph.size, graph.size)
    trunk = trunk_of(graph.module)
    if trunk is None:
        export_dynamic_batch(graph.module, example, out / f"{graph.name}.onnx", "photos", "out")
        return graph.describe()
    stages, digest = [], trunk.weights_digest()
    with torch.no_grad():
        for k, stage in enumerate(trunk.stages()):
            ident = f"{digest}-{graph.size}px-stage{k}"
            file = f"{TRUNK_DIR}/{ident}.onnx"
            if not (out / file).exists():
                export_dynamic_batch(stage.eval(), example, out / file, "x", "y")
            stages.append({"id": ident, "file": file})
            example = stage(example)
    export_dynamic_batch(FromFeatures(graph.module), example, out / f"{graph.name}.onnx", "features", "out")
    return {**graph.describe(), "trunk": stages}


def export_bundle(family: str, root: Path, params: Params, out: Path, *, int8: bool = True) -> dict:
    """Write ``out/`` (created) with the family's ONNX graphs, its other files and ``meta.json``; returns the meta.

    With ``int8``, the graphs the reviewer stage chose to serve as INT8 (:func:`int8_choice`) get their INT8 twin,
    served (:mod:`pipelines.release.quantize`)."""
    out.mkdir(parents=True, exist_ok=True)
    bundle = _bundle(family, root, params)
    graphs = {graph.name: _export_graph(graph, out) for graph in bundle.graphs}
    for name, write in bundle.files.items():
        write(out / name)
    meta = {"family": family, "graphs": graphs,
            "thresholds": _thresholds(family, root), **bundle.meta}
    (out / BUNDLE_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    from pipelines.release.quantize import STORE, calibration_boxes, calibration_photos, int8_choice, quantize_bundle

    served = int8_choice(family, root, params) if int8 else []
    if served:
        quantize_bundle(out, calibration_photos(root, params), served, served=served, store=root / STORE,
                        boxes=calibration_boxes(root, params))
    return read_meta(out)                            # what serving will read back must be valid


def parity_photos(root: Path, n: int = 8) -> np.ndarray:
    """``n`` real generated photos of the frozen test split (uint8, at the data's size)."""
    df = split_frame(common.load_frame(root), "test").sort_values("listing_id").head(n)
    size = int(df["width"].iloc[0]) if "width" in df else 256
    return load_resized(list(df["path"]), size)


def parity(family: str, root: Path, params: Params, bundle: Path, photos: np.ndarray) -> dict:
    """Largest |ONNX - torch| of every graph of the bundle on ``photos`` (FP32: an INT8 twin's deviation is
    recorded by its quantization); raises above the tolerance."""
    from pipelines.serve.models import ReviewerModels

    spec = _bundle(family, root, params)
    served = ReviewerModels({family: bundle}, threads=1, int8=()).outputs(photos)   # as serving runs them, FP32
    result = {}
    for graph in spec.graphs:
        x = to_input(list(photos), graph.size)
        with torch.no_grad():
            expected = graph.module.eval()(x).numpy()
        result[graph.name] = float(np.abs(served[graph.name] - expected.reshape(len(photos), -1)).max())
    if spec.parity is not None:
        result.update(spec.parity(bundle, photos))
    worst, tolerance = max(result.values()), params.gate.onnx_parity_tolerance
    if not worst <= tolerance:
        raise ValueError(f"{family}: ONNX differs from torch by {worst:.3g} (> {tolerance}) on real photos: {result}")
    return result
