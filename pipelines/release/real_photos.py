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
  in-painted object; only edits a person could see, by ``labels.visibility``) answered so, per kind too;
  ``roc_auc`` of the score, edits against unedited views (the ordering, whatever the threshold), and the median
  score of each photo's unedited views.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

from pipelines.data import real_photos as rp
from pipelines.data.synth.camera import to_jpeg
from pipelines.params import Params

METRICS_FILE = Path("metrics/real_photos.json")
PLOT_DIR = Path("plots/real_photos")
BUNDLES = Path("models/reviewer/bundles")
FAMILIES = ("sku", "blur", "manipulation")
FALL = 0.01           # a blur score lower than at a weaker blur by more than this is a fall


def views(params: Params, photos: Sequence[str] | None = None, per_photo: int | None = None
          ) -> list[tuple[str, int, np.ndarray]]:
    """``(photo, view index, uint8 RGB)`` of every check photo (or of ``photos``): its centre square, then random
    square crops (``check_views`` per photo, or ``per_photo``)."""
    rng = np.random.default_rng(params.real_photos.seed)
    size, out = params.data.image_size, []
    per_photo = params.real_photos.check_views if per_photo is None else per_photo
    for ref in (params.real_photos.checks if photos is None else photos):
        img = rp.load(ref)
        out.append((ref, 0, rp.centre_crop(img, size)))
        out += [(ref, k, rp.square_crop(rng, img, size, min_frac=0.5)) for k in range(1, per_photo)]
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


def uploads(params: Params, images: list[np.ndarray]) -> np.ndarray:
    """``images`` as the service receives them: each saved as a JPEG and decoded like an upload, uint8 [N, S, S, 3]."""
    from pipelines.serve.models import prepare
    from pipelines.serve.photo_input import decode_photo, photo_limits

    limits, size = photo_limits(params), params.data.image_size
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([prepare(decode_photo(to_jpeg(img, 92), **limits), size) for img in images])


@dataclass
class PhotoSet:
    """The photos one measurement scores, made and decoded once: the unedited views, their edits and their blur
    series (each entry as :func:`views`, :func:`edited` and :func:`blurred` give it) with their uploads."""
    base: list
    edits: list
    series: list
    base_rgb: np.ndarray
    edits_rgb: np.ndarray
    series_rgb: np.ndarray


def photo_set(params: Params, photos: Sequence[str] | None = None, per_photo: int | None = None) -> PhotoSet:
    """The check photos' :class:`PhotoSet` (or that of ``photos``, ``per_photo`` views each)."""
    base = views(params, photos, per_photo)
    edits, series = edited(params, base), blurred(params, base)
    return PhotoSet(base, edits, series, uploads(params, [img for *_, img in base]),
                    uploads(params, [img for *_, img in edits]), uploads(params, [img for *_, img in series]))


def _review(models, rgbs: np.ndarray, claims: list[str | None] | None = None):
    """``(answer, raw)`` of each upload of ``rgbs`` through ``models`` and the one decision rule."""
    from pipelines.serve.decision import decide

    out = []
    for start in range(0, len(rgbs), 32):
        raws = models.infer(rgbs[start:start + 32])
        for j, raw in enumerate(raws):
            claim = None if claims is None else claims[start + j]
            out.append((decide(raw, models.metas, sku_id=claim), raw))
    return out


def _auc(positives: pd.Series, negatives: pd.Series) -> float | None:
    """ROC AUC of the score: the chance that a positive scores above a negative (ties count half), from ranks.
    Unlike the rates at the threshold, it says whether the model orders the photos right at all."""
    if not len(positives) or not len(negatives):
        return None
    ranks = rankdata(np.concatenate([positives.to_numpy(float), negatives.to_numpy(float)]))
    n = len(positives)
    return round(float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negatives))), 4)


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


def measure(models, params: Params, photos: PhotoSet | None = None,
            soft_focus: Sequence[str] | None = None) -> tuple[dict, pd.DataFrame]:
    """Every figure of the module doc for ``models`` (ReviewerModels with the sku, blur and manipulation bundles, or
    a mapping family -> ReviewerModels of that family's bundle: the same figures, each family's photos run through
    its own graphs only), and one row per photo scored. ``photos``: the :class:`PhotoSet` scored (default: the
    check photos'); ``soft_focus``: the photos left out of ``sharp_flagged`` (default ``real_photos.soft_focus``)."""
    photos = photo_set(params) if photos is None else photos
    soft_focus = params.real_photos.soft_focus if soft_focus is None else soft_focus
    base = photos.base
    rows = []
    metrics: dict = {"photos": list(dict.fromkeys(ref for ref, *_ in base)), "views": len(base)}
    of = models.get if isinstance(models, Mapping) else (lambda family: models)
    meta = {f: of(f).metas[f] for f in FAMILIES if of(f) is not None and f in of(f).metas}

    if "manipulation" in meta:
        edits = photos.edits
        answers = _review(of("manipulation"), np.concatenate([photos.base_rgb, photos.edits_rgb]))
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
            "median_score_edited": round(float(edit_rows["score"].median()), 4) if len(edit_rows) else None,
            "roc_auc": _auc(edit_rows["score"], unedited["score"]),
            "median_score_unedited_by_photo": {ref: round(float(g["score"].median()), 4)
                                               for ref, g in unedited.groupby("photo", sort=False)}}

    if "blur" in meta:
        series = photos.series
        answers = _review(of("blur"), photos.series_rgb)
        for (ref, k, kind, strength, img), (answer, raw) in zip(series, answers):
            rows.append({"check": "blur", "photo": ref, "view": k, "kind": kind, "strength": strength,
                         "score": raw["blur"], "laplacian": _laplacian(img), "flagged": "blur" in answer["reasons"]})
        b = pd.DataFrame([r for r in rows if r["check"] == "blur"])
        sharp = b[(b["kind"] == "gaussian") & (b["strength"] == 0)]
        soft = sharp["photo"].isin(list(soft_focus))
        metrics["blur"] = {"threshold": meta["blur"]["thresholds"]["blur"],
                           "sharp_flagged": round(float(sharp.loc[~soft, "flagged"].mean()), 4),
                           "sharp": int((~soft).sum()),
                           "sharp_flagged_all_views": round(float(sharp["flagged"].mean()), 4),
                           "soft_focus": {"photos": list(soft_focus), "views": int(soft.sum()),
                                          "flagged": round(float(sharp.loc[soft, "flagged"].mean()), 4)
                                          if soft.any() else None}}
        for kind in ("gaussian", "motion"):
            part = b[b["kind"] == kind] if kind == "gaussian" else \
                pd.concat([sharp.assign(kind="motion"), b[b["kind"] == "motion"]])   # motion series start sharp
            metrics["blur"][kind] = {"model": _series(part, "score"), "laplacian_baseline": _series(part, "laplacian")}
        metrics["blur"]["pooled_spearman"] = metrics["blur"]["gaussian"]["model"]["pooled_spearman"]

    if "sku" in meta:
        answers = _review(of("sku"), photos.base_rgb)                           # first pass: the nearest SKU
        nearest = [raw["sku"]["predicted"] for _, raw in answers]
        answers = _review(of("sku"), photos.base_rgb, claims=nearest)
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
    models = {f: ReviewerModels.as_served({f: str(p)}, params) for f, p in bundles.items()}
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


def gate_figures(metrics: dict) -> dict[str, float | None]:
    """The figures of :func:`measure`'s ``metrics`` that ``gate.real_photos`` holds the candidates to, by the name of
    their limit there (:data:`pipelines.release.gate.REAL_PHOTO_CRITERIA`; None where not measured)."""
    from pipelines.release.gate import REAL_PHOTO_CRITERIA

    return {limit: (metrics.get(section) or {}).get(key)
            for criteria in REAL_PHOTO_CRITERIA.values() for section, key, limit, _, _ in criteria}


def training_photo_set(params: Params) -> PhotoSet:
    """The :class:`PhotoSet` of the real training photos the INT8 choice compares: ``serving.int8.real_photo_views``
    views of each of ``real_photos.train``."""
    return photo_set(params, params.real_photos.train, params.serving.int8.real_photo_views)


class TrainingPhotoMemo:
    """The gate's real-photo figures of the candidates' ``bundles`` with a set of units as INT8, measured on the real
    *training* photos (``real_photos.train``, ``serving.int8.real_photo_views`` views each): what the reviewer stage's
    INT8 choice compares with FP32's (:func:`pipelines.release.reviewer.int8_holds`). The check photos stay out of it:
    choosing on them would bias the figures the gate then reads there.

    The photos are made and decoded once; each family runs on its own graphs, and runs again only where the precision
    of one of its units (its graphs, the trunk stages they read) changed."""

    def __init__(self, params: Params, bundles: Mapping[str, Path]):
        from pipelines.release.quantize import entries
        from pipelines.serve.bundle import read_meta

        self.params = params
        self.bundles = {f: Path(p) for f, p in bundles.items() if f in FAMILIES}
        self.units = {f: {u for u, _ in entries(read_meta(p))} for f, p in self.bundles.items()}
        self.photos = training_photo_set(params)
        self.memo: dict[tuple, dict] = {}
        self.runs: list[list[str]] = []         # the families each call measured (the rest came from the memo)

    def figures(self, units) -> dict[str, float | None]:
        from pipelines.serve.models import ReviewerModels

        chosen, out, ran = set(units), {}, []
        for family, path in sorted(self.bundles.items()):
            key = (family, tuple(sorted(chosen & self.units[family])))
            if key not in self.memo:
                models = ReviewerModels.as_served({family: str(path)}, self.params, int8=list(key[1]))
                metrics, _ = measure({family: models}, self.params, self.photos, soft_focus=())
                self.memo[key] = {k: v for k, v in gate_figures(metrics).items() if v is not None}
                ran.append(family)
            out.update(self.memo[key])
        self.runs.append(ran)
        return out

