"""Every served family's bundle on ONNX Runtime: a batch of photos -> each photo's raw outputs.

``ReviewerModels.infer`` is what the service's batched model worker runs; the decision is
:func:`pipelines.serve.decision.decide`. Nothing here knows a family: each bundle's ``meta.json``
says what its graphs output (:mod:`pipelines.serve.bundle`), and the raw outputs are keyed by
graph name (``sku``, ``blur``, ``defects``, ``prohibited``, ``manipulation``; ``boxes`` for the
detector's YOLO graph).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipelines.serve.bundle import GALLERY_FILE, read_meta
from pipelines.serve.decision import sku_candidates
from pipelines.serve.images import resize, to_array
from pipelines.serve.yolo import YoloOnnx


def prepare(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded photo of any size as the models' input: uint8 [size, size, 3] (``data.image_size``)."""
    return resize(rgb, size)


class ReviewerModels:
    """The ONNX graphs (and YOLO detector) of bundle directories, family -> path."""

    def __init__(self, bundles: Mapping[str, str | Path], threads: int = 2):
        import onnxruntime as ort

        self.metas = {family: read_meta(Path(path)) for family, path in bundles.items()}
        for family, meta in self.metas.items():
            if meta.get("family") != family:
                raise ValueError(f"bundle {bundles[family]} holds family {meta.get('family')!r}, not {family!r}")
        # One thread per graph and ``threads`` graphs at a time: at the batch sizes served, running the checks
        # side by side uses the cores better than one graph after another on all of them (benchmarks/serving.py).
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="reviewer")
        self.graphs: dict[str, tuple] = {}          # name -> (session, graph meta, family meta, gallery or None)
        self.yolo: dict[str, tuple[YoloOnnx, list[str]]] = {}
        for family, path in bundles.items():
            meta = self.metas[family]
            for name, graph in meta["graphs"].items():
                session = ort.InferenceSession(str(Path(path) / graph["file"]), options,
                                               providers=["CPUExecutionProvider"])
                gallery = None
                if graph["output"] == "embedding":
                    g = np.load(Path(path) / GALLERY_FILE)
                    gallery = (g / np.linalg.norm(g, axis=1, keepdims=True).clip(1e-12), np.array(meta["gallery_skus"]))
                self.graphs[name] = (session, graph, meta, gallery)
            if "yolo" in meta:
                y = meta["yolo"]
                self.yolo["boxes"] = (YoloOnnx(Path(path) / y["file"], y["imgsz"], conf=y["conf"], threads=1),
                                      list(y["classes"]))

    def infer(self, photos: np.ndarray) -> list[dict]:
        """Raw outputs per photo of ``photos`` (uint8 [N, S, S, 3]): scores, probabilities, SKU, boxes."""
        out: list[dict] = [{} for _ in range(len(photos))]
        if len(photos) == 0:
            return out
        jobs = [self.pool.submit(self._graph, name, photos, out) for name in self.graphs]
        jobs += [self.pool.submit(self._boxes, name, photos, out) for name in self.yolo]
        for job in jobs:
            job.result()
        return out

    def _graph(self, name: str, photos: np.ndarray, out: list[dict]) -> None:
        session, graph, meta, gallery = self.graphs[name]
        y = session.run(None, {session.get_inputs()[0].name: to_array(photos, graph["size"])})[0]
        y = y.reshape(len(photos), -1)
        if graph["output"] == "score":
            for o, v in zip(out, y[:, 0]):
                o[name] = float(v)
        elif graph["output"] == "scores":
            for o, row in zip(out, y):
                o[name] = {label: float(p) for label, p in zip(graph["labels"], row)}
        else:                                                   # embedding: the best SKUs over the gallery
            vectors, skus = gallery
            emb = y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-12)
            for o, row in zip(out, emb @ vectors.T):
                candidates = sku_candidates(row, skus, int(meta["candidates"]))
                o[name] = {"predicted": candidates[0][0], "similarity": candidates[0][1], "candidates": candidates}

    def _boxes(self, name: str, photos: np.ndarray, out: list[dict]) -> None:
        yolo, classes = self.yolo[name]
        for o, det in zip(out, yolo.detect(photos)):
            boxes: dict[str, list] = {c: [] for c in classes}
            for cls, conf, xyxyn in zip(det["cls"], det["conf"], det["xyxyn"]):
                boxes[classes[int(cls)]].append([round(float(v), 4) for v in xyxyn] + [round(float(conf), 4)])
            o[name] = {c: sorted(b, key=lambda b: -b[4]) for c, b in boxes.items()}
