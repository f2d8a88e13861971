"""The detector's YOLO graph as INT8: how much faster, and what it does to the boxes the reviewer reads.

    # after the reviewer stage (models/reviewer/bundles/detector: yolo.onnx, its imgsz and classes)
    .venv/bin/python benchmarks/yolo_int8.py /tmp/demo [--photos 96]

The reviewer stage's INT8 choice (:mod:`pipelines.release.quantize`) covers the trunk stages and the family graphs;
the detector's YOLO graph (224 px, it finds the product box the SKU graph crops by, the stickers and the dirt) always
runs FP32. This quantizes it as the project quantizes the others (ONNX Runtime static QDQ, per-channel int8 weights,
uint8 activations calibrated on the ``serving.int8.calibration_photos`` validation photos, letterboxed as the detector
reads them), three ways:

- ``score_tail``: the project's rule, every node from the outputs back to the last convolutions FP32
  (:func:`pipelines.release.quantize.score_tail`);
- ``head_convs``: the Detect head's convolutions INT8 too, its activations, DFL and decoding FP32;
- ``all``: every node INT8.

For each: batch-1 ms of FP32 and INT8 on one thread (alternated, fastest of 21: :func:`pipelines.release.quantize.
paired_ms`), and against FP32 on ``--photos`` test photos, per class, the IoU of the most confident box (1 where
neither finds one), the largest and median change of the best confidence, and the photos whose best box crosses
the detector bundle's ``box_confidence`` one way or the other. Writes benchmarks/results/yolo_int8.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_header import header  # noqa: E402
from reviewer_latency import photos  # noqa: E402

VARIANTS = ("score_tail", "head_convs", "all")


def excluded(model, variant: str) -> list[str]:
    """The node names kept FP32 in ``variant``."""
    from pipelines.release.quantize import score_tail

    if variant == "score_tail":
        return score_tail(model)
    if variant == "head_convs":
        head = [n for n in model.graph.node if n.name.startswith(f"/model.{_detect_index(model)}/")]
        return [n.name for n in head if n.op_type != "Conv" or "dfl" in n.name]
    return []


def _detect_index(model) -> int:
    """The module index of the Detect head: the highest ``/model.N/`` in the node names."""
    return max(int(n.name.split("/")[1].split(".")[1]) for n in model.graph.node if n.name.startswith("/model."))


def quantize(src: Path, dst: Path, x: np.ndarray, variant: str, input_name: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pipelines.release.quantize import _Calibration

    class Reader(_Calibration, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="yolo-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # YOLO's dynamic graph defeats the symbolic shape inference quantize_graph runs first
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(input_name, x), quant_format=QuantFormat.QDQ, per_channel=True,
                        nodes_to_exclude=excluded(onnx.load(str(pre)), variant),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"CalibTensorRangeSymmetric": False})


def best(dets: list[dict], cls: int) -> list[tuple | None]:
    """Each photo's most confident box of class ``cls``: (xyxyn, conf), or None."""
    out = []
    for d in dets:
        mine = d["cls"] == cls
        if mine.any():
            i = int(np.argmax(np.where(mine, d["conf"], -1)))
            out.append((d["xyxyn"][i], float(d["conf"][i])))
        else:
            out.append(None)
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def compare(fp32: list[dict], int8: list[dict], classes: list[str], cut: float) -> dict:
    out = {}
    for c, name in enumerate(classes):
        a, b = best(fp32, c), best(int8, c)
        ious = [1.0 if u is None and v is None else 0.0 if u is None or v is None else iou(u[0], v[0])
                for u, v in zip(a, b)]
        conf = [abs((u[1] if u else 0.0) - (v[1] if v else 0.0)) for u, v in zip(a, b)]
        crossed = sum(((u[1] if u else 0.0) >= cut) != ((v[1] if v else 0.0) >= cut) for u, v in zip(a, b))
        out[name] = {"best_box_iou_median": round(float(np.median(ious)), 3), "best_box_iou_min": round(min(ious), 3),
                     "best_conf_change_max": round(max(conf), 3), "best_conf_change_median": round(float(np.median(conf)), 4),
                     "photos_crossing_box_confidence": int(crossed)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a project after the reviewer stage")
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "yolo_int8.json")
    args = ap.parse_args()

    from pipelines.params import load_params
    from pipelines.release.quantize import calibration_photos, paired_ms
    from pipelines.serve.yolo import YoloOnnx

    params = load_params(args.root / "params.yaml")
    bundle = args.root / "models" / "reviewer" / "bundles" / "detector"
    meta = json.loads((bundle / "meta.json").read_text())
    y = meta["yolo"]
    fp32 = YoloOnnx(bundle / y["file"], y["imgsz"], conf=y["conf"], threads=1)
    calibration = fp32.preprocess(list(calibration_photos(args.root, params)))
    x = photos(args.root, args.photos)
    one = fp32.preprocess([x[0]])
    reference = fp32.detect(x)
    result = {**header("python benchmarks/yolo_int8.py <project> " + " ".join(sys.argv[2:])),
              "project": str(args.root), "imgsz": y["imgsz"], "classes": y["classes"],
              "box_confidence": meta["box_confidence"], "calibration_photos": len(calibration),
              "photos": len(x), "variants": {}}
    with tempfile.TemporaryDirectory(prefix="yolo-int8-") as tmp:
        for variant in VARIANTS:
            dst = Path(tmp) / f"{variant}.onnx"
            quantize(bundle / y["file"], dst, calibration, variant, fp32.input_name)
            int8 = YoloOnnx(dst, y["imgsz"], conf=y["conf"], threads=1)
            ms_fp32, ms_int8 = paired_ms(lambda: fp32.forward(one), lambda: int8.forward(one))
            result["variants"][variant] = {"fp32_ms": round(ms_fp32, 3), "int8_ms": round(ms_int8, 3),
                                           "speedup": round(ms_fp32 / ms_int8, 3),
                                           "against_fp32": compare(reference, int8.detect(x), y["classes"],
                                                                   meta["box_confidence"])}
            print(variant, json.dumps(result["variants"][variant]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
