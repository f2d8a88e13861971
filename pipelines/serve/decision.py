"""The one decision rule: raw model outputs plus the policy -> the answer of the serving contract.

Serving (``bentos/service.py``), evaluation (:mod:`pipelines.train.review`, the families' metrics)
and the drift reference all decide through this module, so they cannot drift apart:

- :func:`sku_candidates` and :func:`sku_scores`: the SKUs a photo may show, from its similarities to the
  gallery, and how well the claimed one matches against its best rival;
- :func:`sku_alarm`: a claim is alarmed when another SKU matches clearly better, or nothing well enough;
- :func:`centring`: the product box's offset from the centre and whether the frame cuts it;
- :func:`decide`: every check's verdict, the reasons, ``auto_pass`` or ``manual_review``;
- :func:`log_record`: the one prediction-log row of an answer.

The policy is the bundles' metadata (``meta.json`` of every served family): thresholds calibrated
on validation, and the decision settings that ``reviewops register`` copied from params.yaml. A
threshold of ``None`` means the check could not be calibrated (no positive on validation): such a
check flags every photo, because nothing may pass on a guess.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


# --- the pieces evaluation shares ---------------------------------------------------------------

def rank(similarities: np.ndarray) -> np.ndarray:
    """Gallery indices by decreasing similarity, per row (stable: ties keep gallery order)."""
    return np.argsort(-np.asarray(similarities), axis=-1, kind="stable")


def top_k(similarities: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` largest similarities per row, decreasing: always equal to ``rank(similarities)[..., :k]``.

    ``np.argpartition`` finds the k-th largest value ``v`` of each row in O(N) instead of the full sort
    (benchmarks/gallery_search.py); the k picked are sorted by (-similarity, gallery index). Where
    exactly k entries are ``>= v`` that set is the top k. Where more are (ties at ``v`` straddle the
    cut: argpartition picks arbitrary ones among them) or ``v`` is NaN, that row alone is re-ranked
    over its entries ``>= v`` (over the whole row for NaN), so ties keep gallery order as in :func:`rank`
    and NaNs come last.
    """
    s = np.asarray(similarities)
    n = s.shape[-1]
    k = max(0, min(int(k), n))
    if k == 0 or k == n or s.ndim == 0:
        return rank(s)[..., :k]
    rows = s.reshape(-1, n)
    neg = -rows
    picked = np.argpartition(neg, k - 1, axis=1)[:, :k]
    picked.sort(axis=1)                                         # gallery order, then a stable sort by score
    out = np.take_along_axis(picked, np.argsort(np.take_along_axis(neg, picked, axis=1), axis=1, kind="stable"),
                             axis=1)
    kth = np.take_along_axis(rows, out[:, -1:], axis=1)         # the k-th largest value per row
    for i in np.flatnonzero(np.count_nonzero(rows >= kth, axis=1) != k):
        row = rows[i]
        if np.isnan(kth[i, 0]):
            out[i] = rank(row)[:k]
        else:
            cand = np.flatnonzero(row >= kth[i, 0])
            out[i] = cand[np.argsort(-row[cand], kind="stable")[:k]]
    return out.reshape(*s.shape[:-1], k)


def sku_candidates(similarities: np.ndarray, gallery_skus: Sequence[str], n: int) -> list[list]:
    """One photo's ``n`` best SKUs as ``[[sku, similarity], ...]``, best first.

    A SKU's similarity is that of its closest gallery photo (``similarities`` is the photo's row
    against every gallery photo); ties go to the SKU whose photo comes first in the gallery.
    """
    # the best few photos hold the n best SKUs unless a SKU fills them: then the whole ranking is walked
    head = top_k(similarities, candidate_photos(n))
    if len({str(gallery_skus[j]) for j in head}) < n and len(head) < len(similarities):
        head = rank(similarities)
    return best_skus(head, similarities[head], gallery_skus, n)


def candidate_photos(n: int) -> int:
    """How many of a photo's closest gallery photos are read first for its ``n`` best SKUs."""
    return max(4 * n, 32)


def best_skus(photos: Sequence[int], similarities: Sequence[float], gallery_skus: Sequence[str],
              n: int) -> list[list]:
    """The first ``n`` distinct SKUs of gallery ``photos`` ranked best first (``similarities`` theirs), as
    ``[[sku, similarity], ...]``: each SKU at its closest photo's similarity (the walk of the exact search and
    of the index, :mod:`pipelines.serve.gallery_index`)."""
    out: list[list] = []
    seen: set[str] = set()
    for j, value in zip(photos, similarities):
        sku = str(gallery_skus[j])
        if sku not in seen:
            seen.add(sku)
            out.append([sku, float(value)])
            if len(out) == n:
                break
    return out


def sku_scores(candidates: Sequence[Sequence], claimed: str | None) -> tuple[float | None, float | None]:
    """``(claimed_similarity, margin)`` of a claim: the claimed SKU's similarity and how far it leads the best
    other SKU (negative: another SKU matches better). A claimed SKU outside the candidates scores at most
    the last candidate: its similarity is unknown (None) and its margin is taken as the last candidate's
    minus the best one's, an upper bound. Without a claim or a candidate: ``(None, None)``."""
    if claimed is None or not candidates:
        return None, None
    scores = {str(s): float(v) for s, v in candidates}
    if claimed not in scores:
        return None, float(candidates[-1][1]) - float(candidates[0][1])
    rivals = [v for s, v in scores.items() if s != claimed]
    return scores[claimed], scores[claimed] - (max(rivals) if rivals else -1.0)


def flagged(score, threshold: float | None):
    """``score >= threshold`` (a number or an array of scores); an uncalibrated check (None) flags every photo."""
    if threshold is None:
        return np.ones(np.shape(score), dtype=bool) if np.ndim(score) else True
    return np.asarray(score) >= threshold if np.ndim(score) else bool(score >= threshold)


def sku_alarm(candidates: Sequence[Sequence], claimed: str | None, thresholds: Mapping[str, float | None],
              known: frozenset[str] | set[str] | None = None) -> str | None:
    """The SKU reason for one photo (``candidates`` from :func:`sku_candidates`), or None.

    - ``unknown_sku``: the claimed SKU is not in the gallery; or no enrolled SKU matches above
      ``thresholds["similarity"]`` (nothing enrolled looks like the photo: a product outside the catalogue, or
      no product at all), whatever the margins between those poor matches; or the claimed SKU (without a
      claim: the best one) matches at or below it;
    - ``sku_mismatch``: some SKU matches above the similarity threshold and another SKU matches better than
      the claimed one by ``-thresholds["margin"]`` or more (the margin is at or below the threshold).

    Which photos alarm does not depend on that order (the claimed SKU's similarity is at most the best one's),
    only the reason. An uncalibrated threshold (None) alarms every claim.
    """
    if claimed is not None and known is not None and claimed not in known:
        return "unknown_sku"
    sim_thr, margin_thr = thresholds.get("similarity"), thresholds.get("margin")
    best = float(candidates[0][1]) if candidates else None
    if claimed is None:
        return "unknown_sku" if sim_thr is None or best is None or best <= sim_thr else None
    if sim_thr is not None and best is not None and best <= sim_thr:
        return "unknown_sku"
    similarity, margin = sku_scores(candidates, claimed)
    if margin_thr is None or margin is None or margin <= margin_thr:
        return "sku_mismatch"
    if sim_thr is None or similarity is None or similarity <= sim_thr:
        return "unknown_sku"
    return None


def centring(product: Sequence[float] | None, tolerance: float, border: float) -> dict:
    """Offset of the product box's centre from the photo's centre (fraction of the side) and the flag.

    ``product`` is ``[x0, y0, x1, y1, ...]`` normalised, or None (no product found: flagged, since
    the photo cannot be confirmed centred). Off centre when ``max(|dx|, |dy|) > tolerance`` or the
    box lies within ``border`` of an edge (cut by the frame).
    """
    if product is None:
        return {"offset": None, "cut_by_frame": None, "flag": True, "product_found": False}
    x0, y0, x1, y1 = (float(v) for v in product[:4])
    dx, dy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
    cut = min(x0, y0) <= border or max(x1, y1) >= 1 - border
    return {"offset": [dx, dy], "cut_by_frame": bool(cut), "flag": bool(max(abs(dx), abs(dy)) > tolerance or cut),
            "product_found": True}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# --- the decision -------------------------------------------------------------------------------

def decide(raw: Mapping, policy: Mapping[str, Mapping], *, sku_id: str | None = None,
           category: str | None = None) -> dict:
    """The contract's answer for one photo: ``decision``, every ``reasons`` entry and per-check ``checks``.

    ``raw`` is one photo's outputs (:meth:`pipelines.serve.models.ReviewerModels.infer`); ``policy``
    maps each served family to its bundle metadata. ``category`` (phone, tablet, ...) decides
    whether anti-tamper stickers are required; without it, the claimed SKU's category is used,
    else the predicted SKU's.
    """
    checks: dict = {}
    reasons: list[str] = []
    if "sku" in raw:
        meta, s = policy["sku"], raw["sku"]
        thr = meta["thresholds"]
        known = frozenset(meta["gallery_skus"])
        reason = sku_alarm(s["candidates"], sku_id, thr, known)
        listed = sku_id is None or sku_id in known
        claimed_similarity, margin = sku_scores(s["candidates"], sku_id) if sku_id in known else (None, None)
        checks["sku"] = {"predicted": s["predicted"], "similarity": _round(s["similarity"]),
                         "threshold": thr.get("similarity"), "claimed": sku_id,
                         "claimed_similarity": _round(claimed_similarity), "margin": _round(margin),
                         "margin_threshold": thr.get("margin"), "known_sku": sku_id is not None and listed,
                         "match": None if sku_id is None else reason is None}
        if reason:
            reasons.append(reason)
        if category is None:
            category = meta["sku_categories"].get(sku_id or s["predicted"])
    if "blur" in raw:
        thr = policy["blur"]["thresholds"]["blur"]
        checks["blur"] = {"score": _round(raw["blur"]), "threshold": thr, "flag": flagged(raw["blur"], thr)}
        if checks["blur"]["flag"]:
            reasons.append("blur")
    if "defects" in raw:
        meta = policy["detector"]
        thr, cap = meta["thresholds"], meta["max_boxes"]
        required = category in meta["sticker_required_categories"]
        missing = raw["defects"]["sticker_missing"]
        checks["sticker"] = {"required": required, "missing_score": _round(missing),
                             "threshold": thr["sticker_missing"],
                             "present": not (required and flagged(missing, thr["sticker_missing"])),
                             "boxes": raw["boxes"]["sticker"][:cap]}
        if not checks["sticker"]["present"]:
            reasons.append("sticker_missing")
        dirt = raw["defects"]["dirt"]
        checks["dirt"] = {"score": _round(dirt), "threshold": thr["dirt"], "flag": flagged(dirt, thr["dirt"]),
                          "boxes": [b for b in raw["boxes"]["dirt"] if b[4] >= meta["box_confidence"]][:cap]}
        if checks["dirt"]["flag"]:
            reasons.append("dirt")
        product = raw["boxes"]["product"][0] if raw["boxes"]["product"] else None
        centre = centring(product, meta["centering_tolerance"], meta["border"])
        if centre["offset"] is not None:
            centre["offset"] = [_round(v) for v in centre["offset"]]
        checks["centering"] = {**centre, "tolerance": meta["centering_tolerance"]}
        if not checks["centering"]["product_found"]:
            reasons.append("no_product")
        elif checks["centering"]["flag"]:
            reasons.append("off_centre")
    if "prohibited" in raw:
        thr = policy["prohibited"]["thresholds"]
        checks["prohibited"] = {c: {"score": _round(p), "threshold": thr.get(c), "flag": flagged(p, thr.get(c))}
                                for c, p in raw["prohibited"].items()}
        reasons += [f"prohibited:{c}" for c, v in checks["prohibited"].items() if v["flag"]]
    if "manipulation" in raw:
        thr = policy["manipulation"]["thresholds"]["manipulation"]
        checks["manipulation"] = {"score": _round(raw["manipulation"]), "threshold": thr,
                                  "flag": flagged(raw["manipulation"], thr)}
        if checks["manipulation"]["flag"]:
            reasons.append("manipulation")
    return {"decision": "manual_review" if reasons else "auto_pass", "reasons": reasons, "checks": checks}


# --- versions of what decided -------------------------------------------------------------------

def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def policy_version(policy: Mapping[str, Mapping]) -> str:
    """A content hash of the policy: every served family's thresholds and decision settings (not its graphs).

    Two deployments with the same version decide alike on the same scores; a recalibrated threshold, a
    changed centring tolerance or a new category changes it.
    """
    return _digest({family: {k: v for k, v in sorted(meta.items()) if k not in ("graphs", "yolo")}
                    for family, meta in sorted(policy.items())})


def gallery_version(bundle: str | Path | None) -> str | None:
    """A content hash of the SKU gallery the embedding is matched against (its vectors and SKU names); None without one."""
    if bundle is None:
        return None
    from pipelines.serve.bundle import GALLERY_FILE, read_meta

    path = Path(bundle) / GALLERY_FILE
    if not path.is_file():
        return None
    h = hashlib.sha256(path.read_bytes())
    h.update(json.dumps(list(read_meta(bundle).get("gallery_skus", []))).encode())
    return h.hexdigest()[:16]


def log_record(answer: Mapping, raw: Mapping, *, listing_id: str | None, models: Mapping[str, str],
               latency_ms: float | None = None) -> dict:
    """The prediction-log row of one answered photo: the answer, its request, its versions and the flat score columns."""
    checks = answer["checks"]
    sku, sku_check = raw.get("sku") or {}, checks.get("sku") or {}
    offset = (checks.get("centering") or {}).get("offset")
    defects = raw.get("defects") or {}
    prohibited = raw.get("prohibited") or {}
    return {"request_id": answer["request_id"], "listing_id": listing_id, "decision": answer["decision"],
            "reasons": answer["reasons"], "models": dict(models), "checks": checks, "latency_ms": latency_ms,
            "policy_version": answer.get("policy_version"), "gallery_version": answer.get("gallery_version"),
            "blur_score": raw.get("blur"), "sku_claimed": sku_check.get("claimed"),
            "sku_predicted": sku.get("predicted"), "sku_similarity": sku.get("similarity"),
            "sku_match": sku_check.get("match"), "sticker_missing_score": defects.get("sticker_missing"),
            "dirt_score": defects.get("dirt"), "centring_offset": math.hypot(*offset) if offset else None,
            "manipulation_score": raw.get("manipulation"), "prohibited": prohibited,
            "prohibited_max": max(prohibited.values()) if prohibited else None}
