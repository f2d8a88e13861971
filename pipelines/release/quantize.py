"""INT8 graphs: ONNX Runtime static quantization of a bundle's graphs, calibrated on validation photos.

Every ONNX graph of an exported bundle (each frozen trunk stage and each family graph after it) is a
*unit*, named by its trunk stage id or its graph name. :func:`quantize_bundle` writes each requested
unit's INT8 twin beside it (QDQ format, weights per output channel as int8, activations as uint8 with
min-max ranges read on ``serving.int8.calibration_photos`` validation photos, inputs of a family graph
computed through its FP32 trunk; a family graph's :func:`score_tail` stays FP32, so its scores keep the
resolution its thresholds were calibrated at), times both at batch 1 on one thread (alternated, the fastest of 21
runs each: :func:`paired_ms`), and records in ``meta.json``:

    "int8": {"file": "prohibited.int8.onnx", "fp32_ms": 43.3, "int8_ms": 16.9, "max_abs_diff": 0.006},
    "precision": "fp32"

``precision`` is what serving runs (:class:`pipelines.serve.models.ReviewerModels`). It becomes ``int8``
only where the whole reviewer's test-split decisions hold with it (:func:`pipelines.release.reviewer.
choose_int8`): a unit is offered when its INT8 twin is faster by ``serving.int8.min_speedup``, and kept
when every defect's photo recall stays at its floor and the clean auto-pass within
``serving.int8.max_auto_pass_drop`` of the FP32 reviewer's. The register step quantizes the units that
choice names the same way (same photos, same graphs: the same INT8 file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipelines.params import Params
from pipelines.serve.bundle import BUNDLE_META, read_meta
from pipelines.serve.images import product_crop, to_array
from pipelines.serve.models import unit_name

CALIBRATION_BATCH = 8
STORE = Path(".cache") / "int8"          # a project's quantized graphs, by digest (:func:`quantize_graph`)


def int8_file(file: str) -> str:
    return file.removesuffix(".onnx") + ".int8.onnx"


def entries(meta: dict) -> list[tuple[str, dict]]:
    """Every (unit, its entry in ``meta``), units named by :func:`pipelines.serve.models.unit_name`: a trunk stage
    shared by two graphs of the bundle appears twice."""
    return [(unit_name(name, graph, None if stage is graph else stage), stage) for name, graph in meta["graphs"].items()
            for stage in [*graph.get("trunk", ()), graph]]


def _calibration_rows(root: Path, params: Params):
    """The first ``serving.int8.calibration_photos`` validation rows by listing id."""
    from pipelines.data.dataset import split_frame, versioned_manifest

    df = split_frame(versioned_manifest(root), "val").sort_values("listing_id").head(params.serving.int8.calibration_photos)
    if df.empty:
        raise ValueError("INT8 calibration needs validation photos; the validation split is empty")
    return df


def calibration_photos(root: Path, params: Params) -> np.ndarray:
    """The first ``serving.int8.calibration_photos`` validation photos by listing id (uint8, data side)."""
    from pipelines.serve.images import load_resized

    return load_resized(list(_calibration_rows(root, params)["path"]), params.data.image_size)


def calibration_boxes(root: Path, params: Params) -> list:
    """The labelled product box (or None) of each :func:`calibration_photos` photo, in order: what a graph that
    reads the product crop is calibrated on."""
    from pipelines.train.families.sku import labelled_boxes

    return labelled_boxes(_calibration_rows(root, params))


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def median_ms(run, repeats: int = 15, warmup: int = 3) -> float:
    """Median milliseconds of ``run()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def paired_ms(run_a, run_b, repeats: int = 21, warmup: int = 3) -> tuple[float, float]:
    """The fastest milliseconds of ``run_a()`` and of ``run_b()`` over ``repeats`` calls of each, alternated.

    What decides whether a unit serves as INT8 is the ratio of its two times, so both are timed under the same
    load (alternated, not one series after the other) and by their minimum (a shared machine's load only adds
    time). Timed one after the other by their medians, the FP32/INT8 ratio of one trunk stage read 0.48-1.28 over
    five tries beside a training run, and the stage's 1.2 cut served it INT8 in one reviewer run and FP32 in the
    next, moving the live-mix auto-pass by a point with the same models; alternated minima read 1.05-1.13."""
    for _ in range(warmup):
        run_a(), run_b()
    a, b = [], []
    for _ in range(repeats):
        for run, times in ((run_a, a), (run_b, b)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return round(min(a) * 1000, 3), round(min(b) * 1000, 3)


def _paired_ms(session, quantized, x: np.ndarray) -> dict[str, float]:
    """``fp32_ms`` and ``int8_ms``: one run of ``session`` and of its INT8 twin on ``x`` (one photo)."""
    fp32, int8 = paired_ms(lambda: session.run(None, {session.get_inputs()[0].name: x}),
                           lambda: quantized.run(None, {quantized.get_inputs()[0].name: x}))
    return {"fp32_ms": fp32, "int8_ms": int8}


class _Calibration:
    """ONNX Runtime's calibration reader over arrays, in batches."""

    def __init__(self, name: str, x: np.ndarray):
        self.items = iter([{name: x[i:i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.items, None)


LINEAR_OPS = {"Gemm", "MatMul", "Conv"}


def score_tail(model) -> list[str]:
    """The nodes between a graph's outputs and the last linear layer(s) before them, those included: the ops that
    turn features into scores (Gemm, Sigmoid, the concatenation of the prohibited categories' logits, the SKU
    embedding's normalisation). They stay FP32. Quantized, a probability keeps 1/255 steps (uint8 over [0, 1]):
    every score under 0.002 reads 0, so a threshold calibrated under one step on FP32 validation scores (the
    dirt check's, 0.0009 on the demo data) stops flagging what it was set to flag, and the INT8 reviewer's
    figures move with the step instead of with the model (benchmarks/results/int8_score_tail.json)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail, todo, seen = [], [o.name for o in model.graph.output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        tail.append(node.name)
        if node.op_type not in LINEAR_OPS:
            todo.extend(i for i in node.input if i)
    return tail


def quantize_graph(src: Path, dst: Path, x: np.ndarray, store: Path | None = None, *, scorer: bool = True) -> None:
    """``dst``: ``src`` statically quantized (QDQ, per-channel int8 weights, uint8 activations) on inputs ``x``,
    but for its :func:`score_tail` when it is a ``scorer`` (a family graph; a trunk stage's output is a feature map).

    With ``store`` (a project's ``.cache/int8``), the result is kept there under the digest of what determines it
    (the graph's bytes, the calibration inputs, ONNX Runtime's version and these settings): the register step
    and later runs reuse the reviewer stage's quantization instead of repeating it."""
    import hashlib
    import os
    import shutil
    import tempfile

    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    kept = None
    if store is not None:
        h = hashlib.sha256(f"qdq per-channel u8/s8 asymmetric, {'fp32 score tail' if scorer else ''}; "
                           f"onnxruntime {onnxruntime.__version__}".encode())
        h.update(Path(src).read_bytes())
        h.update(str(x.shape).encode() + np.ascontiguousarray(x).tobytes())
        kept = Path(store) / f"{h.hexdigest()[:32]}.onnx"
        if kept.is_file():
            shutil.copy2(kept, dst)
            return

    class Reader(_Calibration, CalibrationDataReader):
        pass

    name = _session(src).get_inputs()[0].name
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))               # shapes inferred, constants folded
        out = Path(tmp) / "int8.onnx"
        import onnx

        tail = score_tail(onnx.load(str(pre))) if scorer else []
        quantize_static(str(pre), str(out), Reader(name, x), quant_format=QuantFormat.QDQ, per_channel=True,
                        nodes_to_exclude=tail,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"CalibTensorRangeSymmetric": False})
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            part = kept.with_name(f"{kept.stem}.{os.getpid()}.tmp")
            shutil.copy2(out, part)
            part.replace(kept)                                 # atomic: a concurrent reader sees all or nothing
        out.replace(dst)


def quantize_bundle(bundle: Path, photos: np.ndarray, wanted: Iterable[str] | None = None, *,
                    served: Iterable[str] = (), cache: dict | None = None, store: Path | None = None,
                    boxes: list | None = None) -> dict[str, dict]:
    """Write the INT8 twin of every unit of ``bundle`` in ``wanted`` (None: all), record it in ``meta.json``
    (precision ``int8`` for the units in ``served``, else ``fp32``); returns unit -> its ``int8`` record.

    ``cache`` (stage id or graph name -> (INT8 file, record)), filled here, lets bundles holding the same trunk stage
    (the same id: the same weights and side) share one quantization, and a stage read on the photos and on the crops
    (two units) one INT8 file; ``store``: see :func:`quantize_graph`. A graph that reads the product crop is
    calibrated on its trunk's FP32 outputs of the photos' crops around ``boxes`` (:func:`calibration_boxes`); trunk
    stages on the photos."""
    import shutil

    cache = {} if cache is None else cache
    bundle = Path(bundle)
    meta = read_meta(bundle)
    known = {unit for unit, _ in entries(meta)}
    wanted = known if wanted is None else set(wanted) & known
    served = set(served)
    inputs: dict[tuple, np.ndarray] = {}
    report: dict[str, dict] = {}
    for name, graph in meta["graphs"].items():
        chain: tuple[str, ...] = ()
        x = inputs.setdefault((graph["size"], chain), to_array(photos, graph["size"]))
        for stage in [*graph.get("trunk", ()), graph]:
            unit, ident = unit_name(name, graph, None if stage is graph else stage), stage.get("id", name)
            src, session = bundle / stage["file"], None
            if stage is graph and graph.get("crop") and boxes is not None:
                # a crop graph reads its trunk's output on the crops; the trunk stages themselves stay calibrated on
                # the photos, so that a stage shared by several bundles gets one INT8 twin whichever quantizes it
                x = to_array(np.stack([product_crop(p, b, graph["crop"]["pad"], graph["size"])
                                       for p, b in zip(photos, boxes)]), graph["size"])
                for fp32 in graph.get("trunk", ()):
                    x = _run(_session(bundle / fp32["file"]), x)
            if unit in wanted and unit not in report:
                dst = bundle / int8_file(stage["file"])
                if ident in cache:
                    if Path(cache[ident][0]).resolve() != dst.resolve():
                        shutil.copy2(cache[ident][0], dst)
                    report[unit] = cache[ident][1]
                else:
                    session = _session(src)
                    quantize_graph(src, dst, x, store, scorer=stage is graph)
                    quantized, one = _session(dst), x[:1]
                    report[unit] = {"file": int8_file(stage["file"]), **_paired_ms(session, quantized, one),
                                    "max_abs_diff": float(np.abs(_run(quantized, x) - _run(session, x)).max())}
                    cache[ident] = (dst, report[unit])
            if unit in report:
                stage["int8"] = report[unit]
                stage["precision"] = "int8" if unit in served else "fp32"
            if stage is graph:
                break
            chain += (ident,)
            key = (graph["size"], chain)
            if key not in inputs:
                inputs[key] = _run(session or _session(src), x)
            x = inputs[key]
    (bundle / BUNDLE_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return report


def int8_choice(family: str, root: Path, params: Params) -> list[str]:
    """The family's units the reviewer stage chose to serve as INT8 (metrics/reviewer.json ``int8.families``),
    when it evaluated this very candidate (same content hash); else [] (every graph FP32)."""
    from pipelines.release.registry import content_hash
    from pipelines.release.reviewer import METRICS_FILE

    path = root / METRICS_FILE
    record = (json.loads(path.read_text()).get("int8") or {}) if path.is_file() else {}
    if not params.serving.int8.enabled or not record.get("served"):
        return []
    if record.get("content_hashes", {}).get(family) != content_hash(family, root):
        print(f"{family}: the reviewer stage chose INT8 graphs for another candidate; serving FP32 "
              "(run `reviewops reviewer` to choose for this one)", flush=True)
        return []
    return sorted(record.get("families", {}).get(family, []))


def set_precision(bundle: Path, int8_units: Iterable[str]) -> None:
    """Serve the units of ``bundle`` in ``int8_units`` (that have an INT8 twin) as INT8, every other as FP32."""
    meta = read_meta(bundle)
    chosen = set(int8_units)
    for unit, entry in entries(meta):
        if "int8" in entry:
            entry["precision"] = "int8" if unit in chosen else "fp32"
    (Path(bundle) / BUNDLE_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
