"""Every served family's bundle on ONNX Runtime: a batch of photos -> each photo's raw outputs.

``ReviewerModels.infer`` is what the service's batched model worker runs; the decision is
:func:`pipelines.serve.decision.decide`. Nothing here knows a family: each bundle's ``meta.json``
says what its graphs output (:mod:`pipelines.serve.bundle`), and the raw outputs are keyed by
graph name (``sku``, ``blur``, ``defects``, ``prohibited``, ``manipulation``; ``boxes`` for the
detector's YOLO graph).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipelines.serve.bundle import GALLERY_FILE, read_meta
from pipelines.serve.gallery_index import GallerySearch
from pipelines.serve.images import product_crop, resize, to_array
from pipelines.serve.yolo import YoloOnnx


def prepare(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded photo of any size as the models' input: uint8 [size, size, 3] (``data.image_size``)."""
    return resize(rgb, size)


def _pad(graph: dict) -> float | None:
    """The pad of a graph that reads the product crop (its entry's ``crop``), None for one reading the photo."""
    crop = graph.get("crop")
    return float(crop["pad"]) if crop else None


def unit_name(name: str, graph: dict, stage: dict | None = None) -> str:
    """The unit the INT8 choice names (:mod:`pipelines.release.quantize`): graph ``name`` itself (``stage`` None), or a
    trunk stage as that graph reads it: its id on the photos, ``<id>@crop<pad>`` on a crop graph's product crops. The
    same weights on the crops are a unit of their own: INT8 can hold on one input and not on the other (stage 1 as
    INT8 moved the blur check's real-photo figures, which read the photos, not the crops)."""
    if stage is None:
        return name
    pad = _pad(graph)
    return stage["id"] if pad is None else f"{stage['id']}@crop{pad:g}"


def served_unit(unit: str, entry: dict, int8: set[str] | frozenset[str] | None) -> tuple[str, str]:
    """(file, precision) a unit (trunk stage id or graph name, its bundle entry ``entry``) runs: INT8 where it has an
    INT8 twin and ``int8`` names it, or, with ``int8`` None, where its entry's ``precision`` says so."""
    if "int8" in entry and (entry.get("precision") == "int8" if int8 is None else unit in int8):
        return entry["int8"]["file"], "int8"
    return entry["file"], "fp32"


def product_boxes(raws: list[dict], name: str = "boxes") -> list:
    """Each raw answer's most confident product box (x0, y0, x1, y1), or None: what a crop graph crops by."""
    out = []
    for raw in raws:
        found = (raw.get(name) or {}).get("product") or []
        out.append(tuple(found[0][:4]) if found else None)
    return out


class ReviewerModels:
    """The ONNX graphs (and YOLO detector) of bundle directories, family -> path.

    A graph on the frozen trunk names its trunk's stages (``meta["graphs"][name]["trunk"]``, each with an id:
    backbone weights, input side, stage); every stage is one ONNX Runtime session however many bundles hold
    it, and one batch runs it once: the families share their frozen stages. A graph without a trunk reads
    the photos itself.

    A graph or stage with an INT8 twin (``"int8"`` in its entry, :mod:`pipelines.release.quantize`) runs the
    precision its entry names (``"precision"``); ``int8`` overrides that: the units (:func:`unit_name`: graph names,
    stage ids, a stage on the crops by its own name) to run as INT8, every other as FP32 (``()``: all FP32, as the
    ONNX-to-torch parity check needs). A stage runs one session per precision, shared by every graph reading it so.

    A graph whose entry has ``crop`` (the SKU embedding, ``train.sku.crop_pad``) reads each photo's square around its
    most confident product box from the detector's YOLO graph (:func:`pipelines.serve.images.product_crop`; the
    whole photo when none is found), so it runs after YOLO; its trunk stages run on the crops, apart from the
    other families' (the sessions are still shared). Without a detector loaded it reads the photos as given
    (the ONNX-to-torch parity check of its bundle alone).
    """

    def __init__(self, bundles: Mapping[str, str | Path], threads: int = 2, int8: Iterable[str] | None = None,
                 chunk: int | None = None, gallery_index: Mapping | None = None):
        import onnxruntime as ort

        self.metas = {family: read_meta(Path(path)) for family, path in bundles.items()}
        for family, meta in self.metas.items():
            if meta.get("family") != family:
                raise ValueError(f"bundle {bundles[family]} holds family {meta.get('family')!r}, not {family!r}")
        # One thread per graph and ``threads`` graphs at a time: at the batch sizes served, running the checks
        # side by side uses the cores better than one graph after another on all of them.
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.threads = max(1, threads)
        self.chunk = chunk
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="reviewer")
        self.graphs: dict[str, tuple] = {}          # name -> (session, graph meta, family meta, gallery or None, stages)
        self.cropped: list[str] = []                # the graphs that read the product crop
        self.stages: dict[str, object] = {}         # trunk stage id -> session
        self.yolo: dict[str, tuple[YoloOnnx, list[str]]] = {}
        chosen = None if int8 is None else set(int8)

        def served(unit: str, entry: dict) -> tuple[str, str]:
            return served_unit(unit, entry, chosen)

        self.precision: dict[str, str] = {}          # unit (:func:`unit_name`) -> the precision it runs
        for family, path in bundles.items():
            meta = self.metas[family]
            for name, graph in meta["graphs"].items():
                file, self.precision[name] = served(name, graph)
                session = ort.InferenceSession(str(Path(path) / file), options, providers=["CPUExecutionProvider"])
                chain = []
                for stage in graph.get("trunk", ()):
                    unit = unit_name(name, graph, stage)
                    file, precision = served(unit, stage)
                    key = stage["id"] if precision == "fp32" else f"{stage['id']}:int8"
                    if key not in self.stages:
                        self.stages[key] = ort.InferenceSession(str(Path(path) / file), options,
                                                                providers=["CPUExecutionProvider"])
                    self.precision[unit] = precision
                    chain.append(key)
                gallery = None
                if graph["output"] == "embedding":
                    g = np.load(Path(path) / GALLERY_FILE)
                    gallery = GallerySearch(g / np.linalg.norm(g, axis=1, keepdims=True).clip(1e-12),
                                            meta["gallery_skus"], gallery_index)
                self.graphs[name] = (session, graph, meta, gallery, tuple(chain))
                if _pad(graph) is not None:
                    self.cropped.append(name)
            if "yolo" in meta:
                y = meta["yolo"]
                self.yolo["boxes"] = (YoloOnnx(Path(path) / y["file"], y["imgsz"], conf=y["conf"], threads=1),
                                      list(y["classes"]))

    @classmethod
    def as_served(cls, bundles: Mapping[str, str | Path], params, int8: Iterable[str] | None = None,
                  threads: int | None = None) -> "ReviewerModels":
        """The models run as the service runs them: :meth:`infer` hands a batch's photos to the threads in chunks of
        ``params.serving.thread_chunk`` (1: every graph at batch 1, the least CPU per photo), on ``threads`` threads
        (default ``params.train.threads``). Every offline review (the reviewer stage and its INT8 choice, the real-photo
        checks, the golden photos, the drift reference) runs so: its scores are the served ones, and cost what they
        cost in serving."""
        return cls(bundles, threads=params.train.threads if threads is None else threads, int8=int8,
                   chunk=params.serving.thread_chunk or None,
                   gallery_index=params.serving.gallery_index.model_dump())

    def outputs(self, photos: np.ndarray, boxes: list | None = None) -> dict[str, np.ndarray]:
        """Every graph's raw output rows [N, ...] for ``photos`` (uint8 [N, S, S, 3]), graph name -> array
        (a crop graph's of the crops around ``boxes``, one product box or None per photo; by default the loaded
        detector's)."""
        if boxes is None and self.cropped:
            boxes = self._detected(photos)
        inputs = self._trunk_outputs(photos, boxes, "all")
        jobs = {name: self.pool.submit(self._run, name, inputs) for name in self.graphs}
        return {name: job.result() for name, job in jobs.items()}

    def _detected(self, photos: np.ndarray) -> list | None:
        """Each photo's most confident product box by the loaded detector (None: no detector loaded)."""
        if not self.yolo:
            return None
        out: list[dict] = [{} for _ in range(len(photos))]
        for name in self.yolo:
            self._boxes(name, photos, out)
        return product_boxes(out)

    def infer(self, photos: np.ndarray) -> list[dict]:
        """Raw outputs per photo of ``photos`` (uint8 [N, S, S, 3]): scores, probabilities, SKU, boxes.

        One photo: its trunk on the calling thread beside YOLO, then the family graphs side by side (the shortest
        wait). Several: in chunks of ``chunk`` photos handed to whichever thread is free (None: one part per
        thread), each chunk run through every graph on its thread (no thread waits for another's graph, and the
        largest graph is shared out like the rest). Per photo a batch costs more CPU than one photo on these
        CPUs, so the service runs chunks of one (``serving.thread_chunk``, benchmarks/batch_cpu.py)."""
        out: list[dict] = [{} for _ in range(len(photos))]
        if len(photos) == 0:
            return out
        if len(photos) == 1 or self.threads == 1:
            boxes = [self.pool.submit(self._boxes, name, photos, out) for name in self.yolo]
            inputs = self._trunk_outputs(photos)
            jobs = [self.pool.submit(self._graph, name, inputs, out) for name in self.graphs
                    if name not in self.cropped] + boxes
            if self.cropped:                                    # the crop graphs wait for YOLO's product box
                for job in boxes:
                    job.result()
                crops = self._trunk_outputs(photos, product_boxes(out) if self.yolo else None, "crop")
                jobs += [self.pool.submit(self._graph, name, crops, out) for name in self.cropped]
            for job in jobs:
                job.result()
            return out
        if self.chunk:                                          # chunks of at most ``chunk`` photos, handed to
            parts = [np.arange(i, min(i + self.chunk, len(photos)))     # whichever thread is free
                     for i in range(0, len(photos), self.chunk)]
        else:
            parts = np.array_split(np.arange(len(photos)), min(len(photos), self.threads))
        for _ in self.pool.map(lambda idx: self._serial(photos[idx], [out[i] for i in idx]), parts):
            pass
        return out

    def infer_serial(self, photos: np.ndarray) -> list[dict]:
        """What :meth:`infer` answers, every unit (YOLO, trunk stages, graphs) one after another on the calling thread:
        what the models need of one core (``benchmarks/serving_speed.py`` measures the model worker against it)."""
        out: list[dict] = [{} for _ in range(len(photos))]
        if len(photos):
            self._serial(photos, out)
        return out

    def _serial(self, photos: np.ndarray, out: list[dict]) -> None:
        """Every graph over ``photos``, one after another on this thread, into ``out``."""
        for name in self.yolo:
            self._boxes(name, photos, out)
        inputs = self._trunk_chunk(photos, product_boxes(out) if self.yolo and self.cropped else None, "all")
        for name in self.graphs:
            self._graph(name, inputs, out)

    def _trunk_outputs(self, photos: np.ndarray, boxes: list | None = None,
                       which: str = "photo") -> dict[tuple, np.ndarray]:
        """(crop pad or None, input side, stage ids) -> that input's or trunk stage's output: each shared stage runs
        once per input. ``which``: the inputs of the whole-photo graphs (``photo``), of the crop graphs (``crop``,
        around ``boxes``: one product box or None per photo), or both (``all``).

        A batch's trunk runs in one part per thread of the pool, side by side (one photo's on the calling thread)."""
        if len(photos) == 1:
            return self._trunk_chunk(photos, boxes, which)
        idx = np.array_split(np.arange(len(photos)), min(len(photos), self.threads))
        parts = list(self.pool.map(lambda i: self._trunk_chunk(photos[i], None if boxes is None else
                                                               [boxes[j] for j in i], which), idx))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _trunk_chunk(self, photos: np.ndarray, boxes: list | None = None, which: str = "photo") -> dict[tuple, np.ndarray]:
        memo: dict[tuple, np.ndarray] = {}

        def value(pad: float | None, size: int, chain: tuple[str, ...]) -> np.ndarray:
            key = (pad, size, chain)
            if key not in memo:
                if chain:
                    stage = self.stages[chain[-1]]
                    memo[key] = stage.run(None, {stage.get_inputs()[0].name: value(pad, size, chain[:-1])})[0]
                elif pad is None or boxes is None:
                    memo[key] = to_array(photos, size)
                else:
                    memo[key] = to_array(np.stack([product_crop(p, b, pad, size) for p, b in zip(photos, boxes)]), size)
            return memo[key]

        for name, (_, graph, _, _, chain) in self.graphs.items():
            if which == "all" or (which == "crop") == (name in self.cropped):
                value(_pad(graph), graph["size"], chain)
        return memo

    def _run(self, name: str, inputs: dict[tuple, np.ndarray]) -> np.ndarray:
        session, graph, _, _, chain = self.graphs[name]
        x = inputs[(_pad(graph), graph["size"], chain)]
        return session.run(None, {session.get_inputs()[0].name: x})[0].reshape(len(x), -1)

    def _graph(self, name: str, inputs: dict[tuple, np.ndarray], out: list[dict]) -> None:
        _, graph, meta, gallery, _ = self.graphs[name]
        y = self._run(name, inputs)
        if graph["output"] == "score":
            for o, v in zip(out, y[:, 0]):
                o[name] = float(v)
        elif graph["output"] == "scores":
            for o, row in zip(out, y):
                o[name] = {label: float(p) for label, p in zip(graph["labels"], row)}
        else:                                                   # embedding: the best SKUs over the gallery
            emb = y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-12)
            for o, candidates in zip(out, gallery.candidates(emb, int(meta["candidates"]))):
                o[name] = {"predicted": candidates[0][0], "similarity": candidates[0][1], "candidates": candidates}

    def _boxes(self, name: str, photos: np.ndarray, out: list[dict]) -> None:
        yolo, classes = self.yolo[name]
        for o, det in zip(out, yolo.detect(photos)):
            boxes: dict[str, list] = {c: [] for c in classes}
            for cls, conf, xyxyn in zip(det["cls"], det["conf"], det["xyxyn"]):
                boxes[classes[int(cls)]].append([round(float(v), 4) for v in xyxyn] + [round(float(conf), 4)])
            o[name] = {c: sorted(b, key=lambda b: -b[4]) for c, b in boxes.items()}
