"""The candidates on real photographs that nothing trained on: ``metrics/real_photos.json``.

The check photos are params.yaml ``real_photos.checks`` (shared/DATA.md: the photos that ultralytics,
scikit-learn and matplotlib ship, and a few wallpapers moved out of training; the params loader refuses a
check photo that is training or generator material). Each gives ``check_views`` square views at
``data.image_size`` (its centre square, then random crops of half to all of its short side), saved as a
camera JPEG; every photo below goes through the service's path: JPEG bytes decoded like an upload, the
bundles the reviewer stage exported (``models/reviewer/bundles``, at the precision it chose to serve) on
ONNX Runtime, and the one decision rule (:func:`pipelines.serve.decision.decide`).

- **manipulation**: ``false_alarm_rate``, the share of unedited views answered with the reason
  ``manipulation``; ``edit_recall``, the share of edited copies (``edits_per_view`` of each view, the kinds
  in turn: a splice from a view of another check photo, a copy-move, a watermark, a smoothed region, an
  in-painted object; only edits a person could see, by ``labels.visibility``) answered so, per kind too.
- **blur**: every view at each ``gaussian_sigmas`` and ``motion_lengths`` strength (px at 256 px). Per view
  the Spearman of the blur score against the strength (mean over views), pooled over every view and
  strength, the share of views whose score never falls as the blur grows (by more than 0.01), and
  ``sharp_flagged``: the share of unblurred views answered ``blur``, over the photos in focus across the
  frame (``real_photos.soft_focus`` names the others: a crop of a bokeh background or of a featureless sky is
  not a sharp photo; ``sharp_flagged_all_views`` and ``soft_focus.flagged`` count them). The variance of the
  Laplacian (as -log variance, higher = blurrier) on the same photos is the baseline.
- **sku**: every unedited view listed as the catalogue SKU it looks most like (the hardest claim): the
  share answered ``unknown_sku`` by the SKU check (similarity at or below its threshold), and the
  similarities against the threshold.

The gate holds each family to ``gate.real_photos`` (:func:`pipelines.release.gate.real_photo_criteria`).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from pipelines.data import real_photos as rp
from pipelines.data.synth.camera import to_jpeg
from pipelines.params import Params

METRICS_FILE = Path("metrics/real_photos.json")
PLOT_DIR = Path("plots/real_photos")
BUNDLES = Path("models/reviewer/bundles")
FAMILIES = ("sku", "blur", "manipulation")
FALL = 0.01           # a blur score lower than at a weaker blur by more than this is a fall


def views(params: Params) -> list[tuple[str, int, np.ndarray]]:
    """``(photo, view index, uint8 RGB)`` of every check photo: its centre square, then random square crops."""
    rng = np.random.default_rng(params.real_photos.seed)
    size, out = params.data.image_size, []
    for ref in params.real_photos.checks:
        img = rp.load(ref)
        out.append((ref, 0, rp.centre_crop(img, size)))
        out += [(ref, k, rp.square_crop(rng, img, size, min_frac=0.5)) for k in range(1, params.real_photos.check_views)]
    return out


def edited(params: Params, base: list[tuple[str, int, np.ndarray]]) -> list[tuple[str, int, str, np.ndarray]]:
    """``edits_per_view`` visible edits of each view, the kinds in turn (a splice takes a view of another photo)."""
    rng = np.random.default_rng(params.real_photos.seed + 1)
    out, turn = [], 0
    for i, (ref, k, img) in enumerate(base):
        donors = [v for r, _, v in base if r != ref] or [img]
        for _ in range(params.real_photos.edits_per_view):
            kind = rp.EDIT_KINDS[turn % len(rp.EDIT_KINDS)]
            turn += 1
            for _attempt in range(20):
                copy = img.copy()
                if rp.edit(copy, donors[int(rng.integers(len(donors)))], kind, rng, params.labels.visibility):
                    out.append((ref, k, kind, copy))
                    break
    return out


def blurred(params: Params, base: list[tuple[str, int, np.ndarray]]) -> list[tuple[str, int, str, float, np.ndarray]]:
    """Every view at every Gaussian sigma and motion length of the check (px at ``data.image_size`` / 256)."""
    rng = np.random.default_rng(params.real_photos.seed + 2)
    px = params.data.image_size / 256
    out = []
    for ref, k, img in base:
        out += [(ref, k, "gaussian", s, rp.gaussian(img, s * px)) for s in params.real_photos.gaussian_sigmas]
        angle = float(rng.uniform(0, np.pi))
        out += [(ref, k, "motion", m, rp.motion(img, m * px, angle)) for m in params.real_photos.motion_lengths]
    return out


def _review(models, params: Params, images: list[np.ndarray], claims: list[str | None] | None = None):
    """``(answer, raw)`` of each image, sent as a JPEG through the service's decode and the one decision rule."""
    from pipelines.serve.decision import decide
    from pipelines.serve.models import prepare
    from pipelines.serve.photo_input import decode_photo, photo_limits

    limits, size, out = photo_limits(params), params.data.image_size, []
    for start in range(0, len(images), 32):
        chunk = images[start:start + 32]
        rgbs = np.stack([prepare(decode_photo(to_jpeg(img, 92), **limits), size) for img in chunk])
        raws = models.infer(rgbs)
        for j, raw in enumerate(raws):
            claim = None if claims is None else claims[start + j]
            out.append((decide(raw, models.metas, sku_id=claim), raw))
    return out


def _laplacian(img: np.ndarray) -> float:
    return float(-np.log(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() + 1e-6))


def _spearman(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 4)


def _series(frame: pd.DataFrame, column: str) -> dict:
    """Per view and pooled Spearman of ``column`` against the strength, and the views whose score never falls."""
    per, monotone, falls_at_heaviest = [], [], []
    for _, view in frame.groupby(["photo", "view"]):
        view = view.sort_values("strength")
        s = view[column].to_numpy()
        per.append(_spearman(view["strength"], s))
        monotone.append(bool(np.all(np.diff(s) >= -FALL)))
        falls_at_heaviest.append(bool(s[-1] < s[:-1].max() - FALL))
    per = [p for p in per if p is not None]
    return {"per_photo_spearman": round(float(np.mean(per)), 4) if per else None,
            "pooled_spearman": _spearman(frame["strength"], frame[column]),
            "monotone_share": round(float(np.mean(monotone)), 4),
            "falls_at_heaviest_share": round(float(np.mean(falls_at_heaviest)), 4),
            "mean_by_strength": {str(k): round(float(v), 4) for k, v in frame.groupby("strength")[column].mean().items()}}


def measure(models, params: Params) -> tuple[dict, pd.DataFrame]:
    """Every figure of the module doc for ``models`` (ReviewerModels with the sku, blur and manipulation bundles),
    and one row per photo scored."""
    base = views(params)
    rows = []
    metrics: dict = {"photos": list(params.real_photos.checks), "views": len(base)}
    meta = models.metas

    if "manipulation" in meta:
        edits = edited(params, base)
        answers = _review(models, params, [img for *_, img in base] + [img for *_, img in edits])
        kinds = ["none"] * len(base) + [kind for _, _, kind, _ in edits]
        refs = [(r, k) for r, k, _ in base] + [(r, k) for r, k, _, _ in edits]
        for (ref, k), kind, (answer, raw) in zip(refs, kinds, answers):
            rows.append({"check": "manipulation", "photo": ref, "view": k, "kind": kind,
                         "score": raw["manipulation"], "flagged": "manipulation" in answer["reasons"]})
        m = pd.DataFrame([r for r in rows if r["check"] == "manipulation"])
        unedited, edit_rows = m[m["kind"] == "none"], m[m["kind"] != "none"]
        metrics["manipulation"] = {
            "threshold": meta["manipulation"]["thresholds"]["manipulation"],
            "unedited": len(unedited), "edited": len(edit_rows),
            "false_alarm_rate": round(float(unedited["flagged"].mean()), 4),
            "edit_recall": round(float(edit_rows["flagged"].mean()), 4) if len(edit_rows) else None,
            "edit_recall_by_kind": {k: round(float(g["flagged"].mean()), 4) for k, g in edit_rows.groupby("kind")},
            "median_score_unedited": round(float(unedited["score"].median()), 4),
            "median_score_edited": round(float(edit_rows["score"].median()), 4) if len(edit_rows) else None}

    if "blur" in meta:
        series = blurred(params, base)
        answers = _review(models, params, [img for *_, img in series])
        for (ref, k, kind, strength, img), (answer, raw) in zip(series, answers):
            rows.append({"check": "blur", "photo": ref, "view": k, "kind": kind, "strength": strength,
                         "score": raw["blur"], "laplacian": _laplacian(img), "flagged": "blur" in answer["reasons"]})
        b = pd.DataFrame([r for r in rows if r["check"] == "blur"])
        sharp = b[(b["kind"] == "gaussian") & (b["strength"] == 0)]
        soft = sharp["photo"].isin(params.real_photos.soft_focus)
        metrics["blur"] = {"threshold": meta["blur"]["thresholds"]["blur"],
                           "sharp_flagged": round(float(sharp.loc[~soft, "flagged"].mean()), 4),
                           "sharp": int((~soft).sum()),
                           "sharp_flagged_all_views": round(float(sharp["flagged"].mean()), 4),
                           "soft_focus": {"photos": list(params.real_photos.soft_focus), "views": int(soft.sum()),
                                          "flagged": round(float(sharp.loc[soft, "flagged"].mean()), 4)
                                          if soft.any() else None}}
        for kind in ("gaussian", "motion"):
            part = b[b["kind"] == kind] if kind == "gaussian" else \
                pd.concat([sharp.assign(kind="motion"), b[b["kind"] == "motion"]])   # motion series start sharp
            metrics["blur"][kind] = {"model": _series(part, "score"), "laplacian_baseline": _series(part, "laplacian")}
        metrics["blur"]["pooled_spearman"] = metrics["blur"]["gaussian"]["model"]["pooled_spearman"]

    if "sku" in meta:
        answers = _review(models, params, [img for *_, img in base])           # first pass: the nearest SKU
        nearest = [raw["sku"]["predicted"] for _, raw in answers]
        answers = _review(models, params, [img for *_, img in base], claims=nearest)
        sims = [a["checks"]["sku"]["claimed_similarity"] for a, _ in answers]
        for (ref, k, _), (answer, raw), sim in zip(base, answers, sims):
            rows.append({"check": "sku", "photo": ref, "view": k, "kind": "none", "score": sim,
                         "flagged": "unknown_sku" in answer["reasons"],
                         "any_alarm": any(r in ("unknown_sku", "sku_mismatch") for r in answer["reasons"])})
        s = pd.DataFrame([r for r in rows if r["check"] == "sku"])
        metrics["sku"] = {"threshold": meta["sku"]["thresholds"].get("similarity"),
                          "unknown_sku_share": round(float(s["flagged"].mean()), 4),
                          "any_sku_alarm_share": round(float(s["any_alarm"].mean()), 4),
                          "similarity_quantiles": {str(q): round(float(np.quantile(s["score"], q)), 4)
                                                   for q in (0.05, 0.5, 0.95)}}
    return metrics, pd.DataFrame(rows)


def evaluate_real_photos(root: str | Path, params: Params) -> dict:
    """Score the reviewer stage's bundles on the real-photo checks: ``metrics/real_photos.json`` and its plots."""
    from pipelines.serve.models import ReviewerModels

    root = Path(root).resolve()
    bundles = {f: root / BUNDLES / f for f in FAMILIES}
    missing = [str(p) for p in bundles.values() if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"no exported candidate bundles {missing}: run the reviewer stage first (dvc repro reviewer)")
    models = ReviewerModels({f: str(p) for f, p in bundles.items()}, threads=params.train.threads)
    metrics, frame = measure(models, params)
    from pipelines.release.registry import content_hash

    metrics["candidates"] = {f: content_hash(f, root) for f in FAMILIES}     # the gate judges only these
    plots = root / PLOT_DIR
    plots.mkdir(parents=True, exist_ok=True)
    blur = frame[frame["check"] == "blur"]
    for kind in ("gaussian", "motion"):
        part = blur[blur["kind"] == kind].groupby("strength")[["score", "laplacian"]].mean().reset_index()
        part.rename(columns={"score": "model", "laplacian": "laplacian_baseline"}).to_csv(plots / f"blur_{kind}.csv",
                                                                                          index=False)
    frame.to_csv(plots / "scores.csv", index=False)
    path = root / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def summary(m: dict) -> str:
    man, blur, sku = m.get("manipulation", {}), m.get("blur", {}), m.get("sku", {})
    return (f"real photos ({m['views']} views of {len(m['photos'])}): manipulation false alarms "
            f"{man.get('false_alarm_rate')}, edits caught {man.get('edit_recall')}; blur pooled Spearman "
            f"{blur.get('pooled_spearman')} (Laplacian {blur.get('gaussian', {}).get('laplacian_baseline', {}).get('pooled_spearman')}), "
            f"sharp flagged {blur.get('sharp_flagged')}; non-products answered unknown_sku {sku.get('unknown_sku_share')}")
