"""The combined reviewer: every family's bundle in ONNX Runtime, and the decision of the serving contract.

``ReviewerModels.infer`` turns a batch of photos into raw per-photo outputs (what the service's
batched model worker runs); ``decide`` turns one photo's outputs, its claimed SKU and category
into the answer of shared/DESIGN.md with every reason. Thresholds come from each bundle's
``meta.json`` (the registered metadata), never from code.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipelines.release.export import BUNDLE_META
from pipelines.train.families import FAMILIES
from pipelines.serve.images import resize, to_input

INPUT_SIZE = 256  # photos reach the models resized to this side (the data's size); each graph resizes further


def read_meta(bundle: Path) -> dict:
    return json.loads((Path(bundle) / BUNDLE_META).read_text())


def prepare(rgb: np.ndarray) -> np.ndarray:
    """A decoded photo of any size as the models' input: uint8 [INPUT_SIZE, INPUT_SIZE, 3]."""
    return resize(rgb, INPUT_SIZE)


class ReviewerModels:
    """Every family's ONNX graphs (and the YOLO detector) loaded from bundle directories."""

    def __init__(self, bundles: Mapping[str, str | Path], threads: int = 2):
        import onnxruntime as ort

        unknown = set(bundles) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}")
        self.metas = {f: read_meta(Path(p)) for f, p in bundles.items()}
        # One thread per graph and ``threads`` graphs at a time: at the batch sizes served, running the checks
        # side by side uses the cores better than one graph after another on all of them (benchmarks/serving.py).
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="reviewer")
        self.sessions = {}
        for family, path in bundles.items():
            for name, graph in self.metas[family]["graphs"].items():
                self.sessions[name] = (ort.InferenceSession(str(Path(path) / graph["file"]), options,
                                                            providers=["CPUExecutionProvider"]), graph["size"])
        self.gallery = None
        if "sku" in bundles:
            g = np.load(Path(bundles["sku"]) / "gallery.npy")
            self.gallery = g / np.linalg.norm(g, axis=1, keepdims=True).clip(1e-12)
            self.gallery_skus = np.array(self.metas["sku"]["gallery_skus"])
        self.yolo, self.yolo_lock = None, threading.Lock()
        if "detector" in bundles:
            from pipelines.train.families.detector import _yolo_class
            self.yolo = _yolo_class()(str(Path(bundles["detector"]) / "yolo.onnx"), task="detect")

    def _run(self, name: str, photos: np.ndarray) -> np.ndarray:
        session, size = self.sessions[name]
        x = to_input(list(photos), size).numpy() if photos.shape[1] != size else to_input(photos, size).numpy()
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    def infer(self, photos: np.ndarray) -> list[dict]:
        """Raw outputs per photo of ``photos`` (uint8 [N, S, S, 3]): scores, probabilities, SKU, boxes."""
        n = len(photos)
        out: list[dict] = [{} for _ in range(n)]
        if n == 0:
            return out
        jobs = [self.pool.submit(job, photos, out) for family, job in (
            ("detector", self._detector), ("prohibited", self._prohibited), ("sku", self._sku),
            ("blur", self._scalar("blur")), ("manipulation", self._scalar("manipulation"))) if family in self.metas]
        for job in jobs:
            job.result()
        return out

    def _scalar(self, family: str):
        def run(photos: np.ndarray, out: list[dict]) -> None:
            for o, v in zip(out, self._run(family, photos).reshape(len(photos))):
                o[family] = float(v)
        return run

    def _prohibited(self, photos: np.ndarray, out: list[dict]) -> None:
        cats = self.metas["prohibited"]["categories"]
        for o, row in zip(out, self._run("prohibited", photos).reshape(len(photos), len(cats))):
            o["prohibited"] = {c: float(p) for c, p in zip(cats, row)}

    def _sku(self, photos: np.ndarray, out: list[dict]) -> None:
        emb = self._run("sku", photos)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        sims = emb @ self.gallery.T
        k = int(self.metas["sku"]["knn"])
        for o, row in zip(out, sims):
            order = np.argsort(-row, kind="stable")[:k]
            votes: dict[str, float] = {}
            for j in order:
                votes[str(self.gallery_skus[j])] = votes.get(str(self.gallery_skus[j]), 0.0) + float(row[j])
            o["sku"] = {"predicted": max(votes, key=votes.get), "similarity": float(row[order[0]]),
                        "top5": [[str(self.gallery_skus[j]), float(row[j])] for j in order]}

    def _detector(self, photos: np.ndarray, out: list[dict]) -> None:
        meta = self.metas["detector"]
        probs = self._run("defects", photos).reshape(len(photos), len(meta["checks"]))
        bgr = [np.ascontiguousarray(p[..., ::-1]) for p in photos]
        with self.yolo_lock:                       # ultralytics' predictor is not thread-safe
            results = self.yolo.predict(bgr, imgsz=meta["imgsz"], conf=meta["conf"], device="cpu", verbose=False)
        classes = meta["classes"]
        for o, p, r in zip(out, probs, results):
            o["defects"] = {c: float(v) for c, v in zip(meta["checks"], p)}
            boxes = {name: [] for name in classes}
            for cls, conf, xyxyn in zip(r.boxes.cls.numpy().astype(int), r.boxes.conf.numpy(), r.boxes.xyxyn.numpy()):
                boxes[classes[cls]].append([round(float(v), 4) for v in xyxyn] + [round(float(conf), 4)])
            o["boxes"] = {name: sorted(b, key=lambda b: -b[4]) for name, b in boxes.items()}


def _centring(product: list | None, tolerance: float, border: float) -> dict:
    if product is None:
        return {"offset": None, "flag": True, "product_found": False}
    x0, y0, x1, y1 = product[:4]
    dx, dy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
    cut = min(x0, y0) <= border or max(x1, y1) >= 1 - border
    return {"offset": [round(dx, 4), round(dy, 4)], "cut_by_frame": bool(cut),
            "flag": bool(max(abs(dx), abs(dy)) > tolerance or cut), "product_found": True}


def decide(raw: dict, metas: Mapping[str, dict], *, sku_id: str | None = None,
           category: str | None = None, dirt_box_conf: float = 0.25) -> dict:
    """The contract's answer for one photo: ``decision``, every ``reasons`` entry and per-check ``checks``.

    ``category`` (phone, tablet, ...) decides whether anti-tamper stickers are required; without
    it, the claimed SKU's category is used, else the predicted SKU's.
    """
    checks: dict = {}
    reasons: list[str] = []
    if "sku" in raw:
        meta, s = metas["sku"], raw["sku"]
        thr = meta["thresholds"]["similarity"]
        known = set(meta["gallery_skus"])
        check = {"predicted": s["predicted"], "similarity": round(s["similarity"], 4), "threshold": thr,
                 "claimed": sku_id}
        if sku_id is not None and sku_id not in known:
            check.update(match=False, known_sku=False)
            reasons.append("unknown_sku")
        elif s["similarity"] < thr:
            check.update(match=False if sku_id else None, known_sku=sku_id is not None)
            reasons.append("unknown_sku" if sku_id is None else "sku_mismatch")
        else:
            check.update(match=None if sku_id is None else s["predicted"] == sku_id, known_sku=sku_id is not None)
            if sku_id is not None and s["predicted"] != sku_id:
                reasons.append("sku_mismatch")
        checks["sku"] = check
        if category is None:
            category = meta["sku_categories"].get(sku_id or s["predicted"])
    if "blur" in raw:
        thr = metas["blur"]["thresholds"]["blur"]
        checks["blur"] = {"score": round(raw["blur"], 4), "threshold": thr, "flag": raw["blur"] >= thr}
        if checks["blur"]["flag"]:
            reasons.append("blur")
    if "defects" in raw:
        meta = metas["detector"]
        thr = meta["thresholds"]
        required = category in meta["sticker_required_categories"]
        sticker = raw["defects"]["sticker_missing"]
        checks["sticker"] = {"required": required, "missing_score": round(sticker, 4),
                             "threshold": thr["sticker_missing"], "present": not (required and sticker >= thr["sticker_missing"]),
                             "boxes": raw["boxes"]["sticker"][:8]}
        if not checks["sticker"]["present"]:
            reasons.append("sticker_missing")
        dirt = raw["defects"]["dirt"]
        checks["dirt"] = {"score": round(dirt, 4), "threshold": thr["dirt"], "flag": dirt >= thr["dirt"],
                          "boxes": [b for b in raw["boxes"]["dirt"] if b[4] >= dirt_box_conf][:8]}
        if checks["dirt"]["flag"]:
            reasons.append("dirt")
        product = raw["boxes"]["product"][0] if raw["boxes"]["product"] else None
        checks["centering"] = _centring(product, meta["centering_tolerance"], meta["border"])
        if not checks["centering"]["product_found"]:
            reasons.append("no_product")
        elif checks["centering"]["flag"]:
            reasons.append("off_centre")
    if "prohibited" in raw:
        thr = metas["prohibited"]["thresholds"]
        checks["prohibited"] = {c: round(p, 4) for c, p in raw["prohibited"].items()}
        reasons += [f"prohibited:{c}" for c, p in raw["prohibited"].items() if p >= thr[c]]
    if "manipulation" in raw:
        thr = metas["manipulation"]["thresholds"]["manipulation"]
        checks["manipulation"] = {"score": round(raw["manipulation"], 4), "threshold": thr,
                                  "flag": raw["manipulation"] >= thr}
        if checks["manipulation"]["flag"]:
            reasons.append("manipulation")
    return {"decision": "manual_review" if reasons else "auto_pass", "reasons": reasons, "checks": checks}


def log_scores(raw: dict, answer: dict) -> dict:
    """The flat score columns of the prediction log for one answered photo."""
    sku = raw.get("sku") or {}
    centring = answer["checks"].get("centering") or {}
    offset = centring.get("offset")
    prohibited = raw.get("prohibited") or {}
    return {"blur_score": raw.get("blur"), "sku_claimed": (answer["checks"].get("sku") or {}).get("claimed"),
            "sku_predicted": sku.get("predicted"), "sku_similarity": sku.get("similarity"),
            "sku_match": (answer["checks"].get("sku") or {}).get("match"),
            "sticker_missing_score": (raw.get("defects") or {}).get("sticker_missing"),
            "dirt_score": (raw.get("defects") or {}).get("dirt"),
            "centring_offset": math.hypot(*offset) if offset else None,
            "manipulation_score": raw.get("manipulation"), "prohibited": prohibited,
            "prohibited_max": max(prohibited.values()) if prohibited else None}
