"""The YOLO detector's exported ONNX graph run with ONNX Runtime alone: no ultralytics, torch or torchvision.

``YoloOnnx.detect`` returns, per photo, what ultralytics 8.4.190 gives for the same graph through
``YOLO(onnx, task="detect").predict(bgr, imgsz=..., conf=..., device="cpu")`` as
``r.boxes.cls / conf / xyxy / xyxyn``; tests/serving/test_yolo_decode.py holds the two side by side.
Each step below names the ultralytics code it reproduces:

* preprocess (``engine/predictor.py`` ``pre_transform`` + ``data/augment.py`` ``LetterBox``): scale
  ``r = min(H'/h, W'/w)`` (up or down), resized side ``max(round(side * r), 1)`` (Python's round,
  half to even) with ``cv2.resize(INTER_LINEAR)`` (skipped when the size is unchanged), padding
  split ``round(d/2 - 0.1)`` top/left and ``round(d/2 + 0.1)`` bottom/right with the constant 114.
  ultralytics' ``predict`` sets ``rect=True``; with a dynamic-shape ONNX graph (the project exports
  ``dynamic=True``) and photos of one shape, LetterBox then runs with ``auto=True``: the padding is
  cut to ``d mod stride`` (minimum rectangle), so a non-square photo gets a non-square input. Photos
  of mixed shapes (or a fixed-shape graph) are padded to the full ``imgsz`` square. RGB channel
  order (ultralytics flips its BGR input back), float32 ``x / 255``, NCHW.
* ``imgsz`` (``utils/checks.py`` ``check_imgsz``): rounded up to a multiple of the graph's stride. A
  fixed-shape graph ignores the argument and uses the size it was exported at, as ultralytics does.
* inference: one ``session.run`` for the whole batch of a dynamic graph; a fixed-batch graph runs in
  chunks of its export batch, the short tail zero-padded (``nn/autobackend.py`` ``forward``).
* NMS (``utils/nms.py`` ``non_max_suppression``; ``predict`` imports torchvision, so its
  ``ops.nms`` does the suppression): candidates whose best class score is ``> conf`` (strictly),
  ``xywh -> xyxy``, best class only, at most ``max_nms`` by score, boxes offset by ``class * 7680``
  so classes never suppress each other, greedy NMS in stable descending score order suppressing
  ``IoU > iou`` (float32 IoU compared in double, as torchvision's kernel does), ``max_det`` kept.
  Models exported end to end (``nms=True`` or an end2end head) only get the ``conf`` filter and
  ``max_det``.
* ``scale_boxes`` (``utils/ops.py``): padding ``round((S - new)/2 - 0.1)`` subtracted and divided by
  the per-axis gains ``new/old`` (recomputed from the input and photo shapes), clipped to the photo;
  ``xyxyn`` divides by the photo's width and height.

All arithmetic is float32 like ultralytics' tensors, so the kept set and order are identical and
the boxes agree to float rounding.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

PAD_VALUE = 114          # LetterBox padding_value
MAX_WH = 7680            # non_max_suppression max_wh: per-class coordinate offset
MAX_NMS = 30000          # non_max_suppression max_nms: candidates kept for NMS


def _literal(value, default):
    if value is None:
        return default
    try:
        return ast.literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError):
        return default


class YoloOnnx:
    """An ultralytics YOLO detect graph (``model.export(format="onnx")``) on ONNX Runtime's CPU provider.

    ``imgsz``: inference size (int or ``(h, w)``), as ``predict(imgsz=...)``; ``conf``: the score a box
    must exceed; ``iou``: the NMS IoU above which a lower-scored box of the same class is dropped;
    ``max_det``: boxes kept per photo; ``threads``: ONNX Runtime intra-op threads.
    ``detect`` is thread-safe (one session, no per-call state).
    """

    def __init__(self, path: str | Path, imgsz: int | Sequence[int], conf: float = 0.25, iou: float = 0.7,
                 max_det: int = 300, threads: int = 1, agnostic: bool = False):
        import onnxruntime as ort

        if not 0 <= conf <= 1:
            raise ValueError(f"conf {conf} must be between 0 and 1")
        if not 0 <= iou <= 1:
            raise ValueError(f"iou {iou} must be between 0 and 1")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.fp16 = "float16" in self.session.get_inputs()[0].type       # a half export takes half input
        meta = self.session.get_modelmeta().custom_metadata_map
        args = _literal(meta.get("args"), {}) or {}
        out_shape = self.session.get_outputs()[0].shape
        # nn/backends/base.py apply_metadata: the export args decide; else a symbolic output batch dim
        self.dynamic = bool(args.get("dynamic", isinstance(out_shape[0], str)))
        self.nms_in_graph = bool(args.get("nms", False))
        self.end2end = self.nms_in_graph or str(meta.get("end2end", "False")) == "True"
        self.batch = int(meta.get("batch", 1))
        self.stride = int(meta.get("stride", 32))
        self.names = {int(k): v for k, v in (_literal(meta.get("names"), {}) or {}).items()}
        if not self.dynamic and "imgsz" in meta:       # predictor.setup_source: a fixed graph's own size wins
            imgsz = _literal(meta["imgsz"], imgsz)
        sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz)
        sizes = [max(-(-int(s) // self.stride) * self.stride, self.stride) for s in sizes]   # check_imgsz
        self.imgsz = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
        self.conf, self.iou, self.max_det, self.agnostic = float(conf), float(iou), int(max_det), bool(agnostic)

    # --- preprocess ------------------------------------------------------------------------------

    def letterbox(self, photo: np.ndarray, auto: bool) -> np.ndarray:
        """One uint8 [h, w, 3] photo resized and padded as ultralytics' LetterBox does."""
        photo = np.ascontiguousarray(photo)
        h, w = photo.shape[:2]
        new_h, new_w = self.imgsz
        r = min(new_h / h, new_w / w)
        unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = new_w - unpad_w, new_h - unpad_h
        if auto:                                      # minimum rectangle
            dw, dh = dw % self.stride, dh % self.stride
        dw, dh = dw / 2, dh / 2
        top, bottom = round(dh - 0.1), round(dh + 0.1)
        left, right = round(dw - 0.1), round(dw + 0.1)
        if (w, h) != (unpad_w, unpad_h):
            photo = cv2.resize(photo, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
        return cv2.copyMakeBorder(photo, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)

    def preprocess(self, photos: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [N, 3, H', W'] in [0, 1], RGB, from uint8 RGB photos."""
        same_shapes = len({p.shape for p in photos}) == 1
        boxed = [self.letterbox(p, auto=same_shapes and self.dynamic) for p in photos]
        x = np.stack(boxed).transpose(0, 3, 1, 2).astype(np.float32)
        x /= np.float32(255)
        return np.ascontiguousarray(x)

    # --- inference -------------------------------------------------------------------------------

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The graph's raw output for a preprocessed batch: [N, 4 + nc, anchors] (xywh in input px, then the
        class scores), or [N, k, 6] rows (x1, y1, x2, y2, conf, cls) for a graph with NMS inside."""
        fixed = not self.dynamic
        if len(x) > self.batch and (self.nms_in_graph or fixed):      # autobackend: export-batch chunks
            return np.concatenate([self.forward(x[i:i + self.batch]) for i in range(0, len(x), self.batch)])
        pad = self.batch - len(x) if fixed else 0
        if pad > 0:                                                     # a static batch rejects short ones
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        y = self.session.run(None, {self.input_name: x.astype(np.float16) if self.fp16 else x})[0]
        y = y.astype(np.float32, copy=False)   # a half graph is decoded in float32 (ultralytics: in half, untested)
        return y[:len(y) - pad] if pad > 0 else y

    # --- postprocess -----------------------------------------------------------------------------

    def _decode(self, pred: np.ndarray) -> np.ndarray:
        """One photo's raw head output [4 + nc, anchors] -> [n, 6] rows (x1, y1, x2, y2, conf, cls) in input px."""
        nc = pred.shape[0] - 4
        scores = pred[4:4 + nc]
        x = pred[:, scores.max(0) > self.conf].T                      # candidates, in anchor order
        if not len(x):
            return np.zeros((0, 6), np.float32)
        box = np.empty((len(x), 4), np.float32)                       # xywh2xyxy
        half = x[:, 2:4] / np.float32(2)
        box[:, :2] = x[:, :2] - half
        box[:, 2:] = x[:, :2] + half
        cls = x[:, 4:4 + nc]
        j = cls.argmax(1)
        conf = cls[np.arange(len(x)), j]
        keep = conf > self.conf
        det = np.concatenate([box, conf[:, None], j[:, None].astype(np.float32)], 1)[keep]
        if len(det) > MAX_NMS:
            det = det[np.argsort(-det[:, 4], kind="stable")[:MAX_NMS]]
        offset = det[:, 5:6] * np.float32(0 if self.agnostic else MAX_WH)
        return det[_nms(det[:, :4] + offset, det[:, 4], self.iou)[:self.max_det]]

    def postprocess(self, y: np.ndarray, input_shape: tuple[int, int], photo_shapes: Sequence[tuple]) -> list[dict]:
        out = []
        for pred, shape in zip(y, photo_shapes):
            if self.end2end:                                          # [N, 6]: conf filter and max_det only
                det = pred[pred[:, 4] > self.conf][:self.max_det, :6].astype(np.float32)
            else:
                det = self._decode(pred)
            h0, w0 = shape[:2]
            xyxy = scale_boxes(input_shape, det[:, :4].copy(), (h0, w0))
            xyxyn = xyxy.copy()
            xyxyn[:, [0, 2]] /= np.float32(w0)
            xyxyn[:, [1, 3]] /= np.float32(h0)
            out.append({"cls": det[:, 5].astype(np.int64), "conf": det[:, 4].copy(), "xyxy": xyxy, "xyxyn": xyxyn})
        return out

    def detect(self, photos: np.ndarray | Sequence[np.ndarray]) -> list[dict]:
        """Boxes of every photo (uint8 RGB, [N, H, W, 3] or a list of [H, W, 3]), one dict per photo.

        Each dict: ``cls`` int64 [n] class ids, ``conf`` float32 [n], ``xyxy`` float32 [n, 4] in the
        photo's pixels and ``xyxyn`` float32 [n, 4] normalised by its width and height, rows by
        descending confidence (ultralytics' order).
        """
        photos = [np.asarray(p) for p in photos]
        if not photos:
            return []
        for p in photos:
            if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3 or not all(p.shape):
                raise ValueError(f"expected uint8 RGB photos [H, W, 3], got {p.dtype} {p.shape}")
        x = self.preprocess(photos)
        return self.postprocess(self.forward(x), x.shape[2:], [p.shape for p in photos])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """torchvision.ops.nms on CPU: indices kept, by descending score (stable on ties)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap.astype(np.float64) > iou)]
    return np.asarray(keep, dtype=np.int64)


def scale_boxes(input_shape: tuple[int, int], boxes: np.ndarray, photo_shape: tuple[int, int]) -> np.ndarray:
    """ultralytics.utils.ops.scale_boxes (xyxy, ratio_pad None): input pixels -> photo pixels, clipped (in place)."""
    gain = min(input_shape[0] / photo_shape[0], input_shape[1] / photo_shape[1])
    new_h, new_w = (max(round(s * gain), 1) for s in photo_shape[:2])
    gain_y, gain_x = new_h / photo_shape[0], new_w / photo_shape[1]
    pad_x = round((input_shape[1] - new_w) / 2 - 0.1)
    pad_y = round((input_shape[0] - new_h) / 2 - 0.1)
    boxes[:, [0, 2]] -= np.float32(pad_x)
    boxes[:, [1, 3]] -= np.float32(pad_y)
    boxes[:, [0, 2]] /= np.float32(gain_x)
    boxes[:, [1, 3]] /= np.float32(gain_y)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, photo_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, photo_shape[0])
    return boxes
