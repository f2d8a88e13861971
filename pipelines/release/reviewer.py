"""The whole reviewer, evaluated: every candidate model together, through the one decision rule.

What the business buys is not one check's recall but the share of clean photos that pass every check
at once while each kind of defect still goes to a person. This stage measures exactly that:

1. every family's current candidate (``models/<family>``, with the thresholds its evaluation chose on
   validation) is exported to the ONNX bundle serving would run (``models/reviewer/bundles/``);
2. every photo of the validation and frozen test splits goes through :func:`pipelines.train.review.review`
   (decoded like an upload, scored on ONNX Runtime, decided by :func:`pipelines.serve.decision.decide`
   with its listing's claimed SKU and category);
3. the raw scores, the decision and the reasons of every photo are kept in
   ``models/reviewer/scores.parquet``, and ``metrics/reviewer.json`` holds per split:

   - ``clean_auto_pass``: the share of clean photos auto-passed (clean: no defect of any kind, a product
     shown, the claimed SKU the one shown and in the gallery; photos whose blur votes contradict each
     other are neither clean nor blurred);
   - ``photo_recall.<defect>``: the share of photos with the defect sent to manual review, for blur,
     sticker_missing, dirt, off_centre, every prohibited category and ``prohibited`` overall,
     manipulation, wrong_claim (a gallery SKU shown, another claimed) and outside_catalogue (a product
     in no gallery);
   - ``reason_recall.<defect>``: the share sent with the right reason;
   - ``positives.<defect>``, ``n`` and ``clean``: what each figure rests on.

   On the test split, ``generated_outside_catalogue`` also holds the reviewer on the gate's generated photos of
   products in no gallery (:func:`generated_outside`) and its photo recall pooled with the test split's
   ``outside_catalogue``: what the gate judges the whole reviewer's outside-catalogue recall on.

Where ``serving.int8`` is on, the stage also chooses which graphs serve as INT8 (:func:`choose_int8`): each
graph's INT8 twin (:mod:`pipelines.release.quantize`) that runs faster is tried in the whole reviewer on the
test split, and kept where every defect's photo recall stays at its floor and the clean auto-pass within
``serving.int8.max_auto_pass_drop`` of the FP32 reviewer's, and the gate's real-photo figures, measured on the real
training photos, within ``serving.int8.max_real_photo_change`` of FP32's. The figures above are those of the reviewer as
chosen; ``int8`` in the metrics holds each graph's speed, deviation and verdict and the FP32 figures.

The same figures are measured on a sample of the live traffic mix (``live_mix`` in params.yaml: about
65% clean photos, where the training splits are enriched in defects), rendered once into
``.reviewops/live_mix/``; ``live_mix_auto_pass`` is the share of that sample auto-passed, the figure
the marketplace sees.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from pipelines.data.dataset import split_frame, versioned_manifest
from pipelines.params import Params
from pipelines.release.operating_point import floor_of
from pipelines.train import families
from pipelines.train.review import review

OUT_DIR = Path("models/reviewer")
METRICS_FILE = Path("metrics/reviewer.json")
REPORT = Path("reports/reviewer/operating_point.html")
SPLITS = ("val", "test")
LIVE = "live_mix"
ALARMS = ("sku_mismatch", "unknown_sku")


def defect_floor(params: Params, defect: str) -> float | None:
    """The recall floor (params.yaml ``gate.recall_floors``) a defect's photo recall or a check's recall is held to;
    None: none."""
    return floor_of(params.gate.recall_floors, defect)


def export_candidates(root: Path, params: Params, out: Path) -> dict[str, Path]:
    """Every family's candidate as the ONNX bundle serving would run: ``{family: bundle dir}``."""
    from pipelines.release.export import export_bundle

    if out.exists():
        shutil.rmtree(out)
    bundles = {}
    for family in families.FAMILIES:
        export_bundle(family, root, params, out / family, int8=False)
        bundles[family] = out / family
    return bundles


def truth(photos: pd.DataFrame, gallery: set[str], categories: list[str]) -> pd.DataFrame:
    """One boolean column per defect kind (and ``clean``) for every photo of the manifest ``photos``."""
    shown = photos["sku_id"].astype(str)
    product = shown != "none"
    in_gallery = shown.isin(gallery)
    prohibited = photos["prohibited"].map(lambda items: set(items) if items is not None else set())
    t = pd.DataFrame({
        "blur": photos["blurred"].astype(bool) & ~photos["blur_dropped"].astype(bool),
        "sticker_missing": photos["sticker_missing"].astype(bool),
        "dirt": photos["dirt"].astype(bool),
        "off_centre": photos["off_centre"].astype(bool) & product,
        **{f"prohibited:{c}": prohibited.map(lambda s, c=c: c in s) for c in categories},
        "prohibited": prohibited.map(bool),
        "manipulation": photos["manipulated"].astype(bool),
        "wrong_claim": product & in_gallery & (photos["claimed_sku"].astype(str) != shown),
        "outside_catalogue": product & ~in_gallery,
    }, index=photos.index)
    defects = [c for c in t.columns if c != "prohibited" and not c.startswith("prohibited:")] + ["prohibited"]
    t["clean"] = product & in_gallery & ~t[defects].any(axis=1) & ~photos["blur_dropped"].astype(bool)
    return t


def right_reason(defect: str, reasons: list[str]) -> bool:
    """The photo went to a person for the defect it has (any reason counts for photo recall)."""
    if defect == "prohibited":
        return any(r.startswith("prohibited:") for r in reasons)
    if defect in ("wrong_claim", "outside_catalogue"):
        return any(r in ALARMS for r in reasons)
    return defect in reasons


def _share(mask: pd.Series) -> float | None:
    return None if len(mask) == 0 else round(float(mask.mean()), 6)


def defects_of(frame: pd.DataFrame) -> list[str]:
    """The defects a scores frame holds truth for (its ``truth.<defect>`` columns, ``clean`` aside)."""
    return [c.removeprefix("truth.") for c in frame.columns if c.startswith("truth.") and c != "truth.clean"]


def split_metrics(frame: pd.DataFrame, defects: list[str]) -> dict:
    """The reviewer's figures on one split's rows of the scores frame (truth columns ``truth.<defect>``)."""
    manual = frame["decision"] == "manual_review"
    clean = frame["truth.clean"]
    out = {"n": int(len(frame)), "clean": int(clean.sum()),
           "clean_auto_pass": _share(~manual[clean]),
           "auto_pass": _share(~manual),
           "photo_recall": {}, "reason_recall": {}, "positives": {}}
    for defect in defects:
        pos = frame[f"truth.{defect}"]
        out["positives"][defect] = int(pos.sum())
        out["photo_recall"][defect] = _share(manual[pos])
        out["reason_recall"][defect] = _share(frame.loc[pos, "reasons"].map(lambda r, d=defect: right_reason(d, list(r))))
    flagging = pd.Series([r for rs in frame.loc[clean, "reasons"] for r in rs], dtype=object)
    out["clean_flagged_by"] = {k: round(v / max(int(clean.sum()), 1), 6)
                               for k, v in flagging.value_counts().sort_index().items()}
    return out


SCORE_COLUMNS = ("sku_predicted", "sku_similarity", "blur_score", "sticker_missing_score", "dirt_score",
                 "manipulation_score")                     # the prediction log's flat score columns kept per photo


def _flat(answer: dict, raw: dict) -> dict:
    """One photo's scores as flat columns (the operating-point report reads them): the prediction log's own
    columns (:func:`pipelines.serve.decision.log_record`), the similarity the SKU alarm compares (the claimed
    SKU's; without a claim the best one's) and the claim's margin, each category's score and the product box."""
    from pipelines.serve.decision import log_record, sku_scores

    record = log_record({"request_id": "", **answer}, raw, listing_id=None, models={})
    product = ((raw.get("boxes") or {}).get("product") or [None])[0]
    raw_sku, claimed = raw.get("sku"), (answer["checks"].get("sku") or {}).get("claimed")
    match, margin = (None, None) if raw_sku is None else \
        (raw_sku["similarity"], None) if claimed is None else sku_scores(raw_sku["candidates"], claimed)
    return {**{k: record[k] for k in SCORE_COLUMNS},
            "sku_match_similarity": match, "sku_margin": margin,          # unrounded: thresholds are such values
            **{f"prohibited_score.{c}": p for c, p in (record["prohibited"] or {}).items()},
            "product_box": None if product is None else [float(v) for v in product[:5]]}


def _frame(split: str, photos: pd.DataFrame, answers: list[tuple[dict, dict]], gallery: set[str],
           params: Params) -> pd.DataFrame:
    """One split's rows of the scores frame: claims, truth, raw scores and answer of every photo."""
    t = truth(photos, gallery, list(params.prohibited.categories)).add_prefix("truth.")
    rows = pd.DataFrame([{"decision": a["decision"], "reasons": list(a["reasons"]), **_flat(a, raw)}
                         for a, raw in answers])
    keep = photos[["listing_id", "path", "sku_id", "claimed_sku", "category"]]
    return pd.concat([keep.assign(split=split), t.reset_index(drop=True), rows], axis=1)


def _gallery(metas: dict) -> set[str]:
    return set(metas["sku"].get("gallery_skus", [])) if "sku" in metas else set()


def reviewed(split: str, photos: pd.DataFrame, models, params: Params, *, progress: bool = False,
             answers: list[tuple[dict, dict]] | None = None) -> pd.DataFrame:
    """``photos`` reviewed by ``models`` (ReviewerModels) as the rows of the scores frame labelled ``split``:
    claims, truth, raw scores, answer. ``answers``: their ``(answer, raw)`` pairs where already known."""
    answers = answers or review(models, photos, params, progress=progress)
    return _frame(split, photos, answers, _gallery(models.metas), params)


def stage_bundles(root: Path) -> dict[str, str]:
    """family -> the bundle directory the reviewer stage exported and decided its scores with."""
    return {p.name: str(p) for p in sorted((Path(root) / OUT_DIR / "bundles").iterdir()) if p.is_dir()}


def score(root: Path, params: Params, models, *, progress: bool = False,
          splits: tuple[str, ...] = (*SPLITS, LIVE), answered: dict[str, list] | None = None) -> pd.DataFrame:
    """Every photo of ``splits`` (validation, test and live mix) reviewed by ``models`` (the candidates'
    ReviewerModels): claims, truth, raw scores, answer. ``answered``: splits whose ``(answer, raw)`` pairs are
    already known (the INT8 choice reviewed the test split with the units chosen), not reviewed again."""
    from pipelines.data.generate import LIVE_MIX_DIR, live_mix_batch
    from pipelines.data.manifest import read_photos

    manifest = versioned_manifest(root)
    parts = [(s, split_frame(manifest, s)) for s in SPLITS if s in splits]
    if LIVE in splits:
        parts.append((LIVE, read_photos(live_mix_batch(root / LIVE_MIX_DIR, params, progress=progress))))
    frames = []
    for split, photos in parts:
        if photos.empty:
            continue
        frames.append(reviewed(split, photos, models, params, progress=progress, answers=(answered or {}).get(split)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class GraphMemo:
    """One split reviewed with any choice of INT8 units, each graph run once per precision: the INT8 choice tries
    up to one set of units per graph, and a graph's raw outputs change only where its own precision or that of a
    trunk stage it reads does (the SKU embedding's also with the detector's boxes, which never run INT8). The
    photos are decoded once and batched as :func:`pipelines.train.review.review` batches them, so every answer
    is the one a full review with those units gives, bit for bit (``tests/release/test_quantize.py``)."""

    def __init__(self, params: Params, bundles: dict[str, Path], photos: pd.DataFrame, *, progress: bool = False):
        from pipelines.train.review import decoded_batches

        self.params, self.bundles, self.photos = params, bundles, photos.reset_index(drop=True)
        self.batches = list(decoded_batches(self.photos, params, progress=progress))
        self.outputs: dict[tuple, list] = {}          # signature -> every photo's raw output of that graph
        self.runs: list[list[str]] = []               # the families each review ran (what the memo saved is the rest)

    @property
    def metas(self) -> dict[str, dict]:
        """The bundles' ``meta.json`` as they are now: the INT8 twins are added to them after the memo is made
        (:func:`choose_int8`), and a graph's signature must see them."""
        from pipelines.serve.bundle import read_meta

        return {family: read_meta(path) for family, path in self.bundles.items()}

    def _signatures(self, metas: dict[str, dict], units: frozenset) -> dict[str, tuple[str, tuple]]:
        """graph or detector output name -> (its family, what its raw output depends on)."""
        from pipelines.serve.models import served_unit, unit_name

        def precision(name: str, graph: dict, stage: dict | None = None) -> tuple[str, str]:
            unit = unit_name(name, graph, stage)
            return unit, served_unit(unit, graph if stage is None else stage, units)[1]

        out = {}
        for family, meta in metas.items():
            for name, graph in meta.get("graphs", {}).items():
                out[name] = (family, (*precision(name, graph),
                                      tuple(precision(name, graph, s) for s in graph.get("trunk", ()))))
            if "yolo" in meta:
                out["boxes"] = (family, ("boxes",))
        return out

    def answers(self, units) -> list[tuple[dict, dict]]:
        """``(answer, raw)`` of every photo with ``units`` (stage ids, graph names) as INT8, every other FP32."""
        from pipelines.serve.decision import decide
        from pipelines.serve.models import ReviewerModels
        from pipelines.train.review import claims

        metas = self.metas
        sigs = self._signatures(metas, frozenset(units))
        todo = {family for family, sig in sigs.values() if sig not in self.outputs}
        if any(graph.get("crop") for f in todo for graph in metas[f].get("graphs", {}).values()):
            todo |= {family for family, meta in metas.items() if "yolo" in meta}   # crops need the boxes
        if todo:
            models = ReviewerModels.as_served({f: str(self.bundles[f]) for f in sorted(todo)}, self.params,
                                              int8=list(units))
            raws = [raw for rgbs in self.batches for raw in models.infer(rgbs)]
            for name, (family, sig) in sigs.items():
                if family in todo:
                    self.outputs[sig] = [raw.get(name) for raw in raws]
            self.runs.append(sorted(todo))
        raws = [{name: self.outputs[sig][i] for name, (_, sig) in sigs.items() if self.outputs[sig][i] is not None}
                for i in range(len(self.photos))]
        return [(decide(raw, metas, **claims(row)), raw) for raw, (_, row) in zip(raws, self.photos.iterrows())]

    def figures(self, units) -> dict:
        """The whole reviewer's clean auto-pass and photo recall on the memo's split with ``units`` as INT8."""
        frame = _frame("test", self.photos, self.answers(units), _gallery(self.metas), self.params)
        m = split_metrics(frame, defects_of(frame))
        return {"clean_auto_pass": m["clean_auto_pass"], "photo_recall": m["photo_recall"]}


def generated_outside(root: Path, params: Params, models, test: dict, *, progress: bool = False) -> dict | None:
    """The whole reviewer on the gate's generated photos of products in no gallery
    (:func:`pipelines.train.families.sku.generated_outside_photos`, ``gate.outside_catalogue_photos`` of them, the
    same the SKU family's evaluation scores): the share sent to a person (``photo_recall``), the share with an SKU
    alarm (``reason_recall``), and the photo recall pooled with the ``test`` split's outside-catalogue photos, which
    are a few per hundred (57 on the default data, where one photo is 1.8 points). None without an SKU check or
    such photos."""
    from pipelines.train.families.sku import generated_outside_photos

    photos = generated_outside_photos(root, params) if "sku" in models.metas else pd.DataFrame()
    if photos.empty:
        return None
    frame = reviewed("generated_outside", photos, models, params, progress=progress)
    m = split_metrics(frame[frame["truth.outside_catalogue"]], ["outside_catalogue"])
    n, recall = m["positives"]["outside_catalogue"], m["photo_recall"]["outside_catalogue"]
    n_test, test_recall = test["positives"].get("outside_catalogue", 0), test["photo_recall"].get("outside_catalogue")
    pooled = ((recall or 0) * n + (test_recall or 0) * n_test) / max(n + n_test, 1)
    return {"photos": n, "photo_recall": recall, "reason_recall": m["reason_recall"]["outside_catalogue"],
            "photos_pooled": n + n_test, "photo_recall_pooled": round(pooled, 6) if n + n_test else None}


def evaluate_reviewer(root: str | Path, params: Params, *, progress: bool = False) -> dict:
    """Export the candidates, review both splits, write the scores and ``metrics/reviewer.json``; returns the metrics."""
    root = Path(root).resolve()
    out = root / OUT_DIR
    from pipelines.serve.models import ReviewerModels

    bundles = export_candidates(root, params, out / "bundles")
    int8, answered = None, None
    if params.serving.int8.enabled:
        memo = GraphMemo(params, bundles, split_frame(versioned_manifest(root), "test"), progress=progress)
        int8 = choose_int8(root, params, bundles, memo, progress=progress)
        answered = {"test": memo.answers(int8["served"])}          # reviewed already, with the units chosen
    models = ReviewerModels.as_served({f: str(p) for f, p in bundles.items()}, params)
    frame = score(root, params, models, progress=progress, answered=answered)
    frame.to_parquet(out / "scores.parquet", index=False)
    defects = defects_of(frame)
    metrics = {split: split_metrics(frame[frame["split"] == split], defects)
               for split in (*SPLITS, LIVE) if (frame["split"] == split).any()}
    if "test" in metrics:
        generated = generated_outside(root, params, models, metrics["test"], progress=progress)
        if generated is not None:
            metrics["test"]["generated_outside_catalogue"] = generated
    metrics["live_mix_auto_pass"] = metrics[LIVE]["auto_pass"]
    metrics["notes"] = {"live_mix_auto_pass": f"share auto-passed of {metrics[LIVE]['n']} photos of the live mix "
                                              f"(params.yaml live_mix, seed {params.live_mix.seed})",
                        "clean": "no defect, a product shown, the claimed SKU shown and in the gallery; "
                                 "photos with contradictory blur votes excluded"}
    metrics["floors"] = dict(params.gate.recall_floors)
    metrics["int8"] = int8
    from pipelines.release.operating_point import write_report     # (it imports this module's split_metrics)

    write_report(root, frame, models.metas, metrics["floors"], root / REPORT)
    path = root / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def int8_holds(figures: dict, fp32: dict, params: Params) -> list[str]:
    """Why the reviewer with INT8 graphs (test ``figures``) does not hold against the FP32 one; [] when it holds:
    every defect's photo recall at its floor (or at FP32's, where FP32 is below it) and the clean auto-pass
    within ``serving.int8.max_auto_pass_drop`` of FP32's, either way: INT8 is the same model made faster, so
    decisions that move a lot up are as wrong as down (scores quantized to 1/255 steps once moved the dirt
    threshold and lifted it 14 points while missing validation positives: docs/release.md, score tails).
    Where ``figures`` carry ``real_photos`` (the gate's real-photo figures on the real training photos,
    :class:`pipelines.release.real_photos.TrainingPhotoMemo`), each within ``serving.int8.max_real_photo_change`` of
    FP32's, either way: test decisions can hold while a real-photo figure moves (stage 1 as INT8 once took the blur
    check's real-photo Spearman 0.873 -> 0.823)."""
    why = []
    for defect, recall in figures["photo_recall"].items():
        floor, before = defect_floor(params, defect), fp32["photo_recall"].get(defect)
        if floor is None or recall is None or before is None:
            continue
        if recall < min(floor, before) - 1e-12:
            why.append(f"photo recall {defect} {recall:.3f} < {min(floor, before):.3f}")
    drop = params.serving.int8.max_auto_pass_drop
    if figures["clean_auto_pass"] is not None and fp32["clean_auto_pass"] is not None:
        if figures["clean_auto_pass"] < fp32["clean_auto_pass"] - drop - 1e-12:
            why.append(f"clean auto-pass {figures['clean_auto_pass']:.3f} < {fp32['clean_auto_pass']:.3f} - {drop}")
        elif figures["clean_auto_pass"] > fp32["clean_auto_pass"] + drop + 1e-12:
            why.append(f"clean auto-pass {figures['clean_auto_pass']:.3f} > {fp32['clean_auto_pass']:.3f} + {drop}")
    change = params.serving.int8.max_real_photo_change
    real, real_fp32 = figures.get("real_photos") or {}, fp32.get("real_photos") or {}
    for name in sorted(real.keys() & real_fp32.keys()):     # the same model made faster: no figure moves either way
        value, before = real[name], real_fp32[name]
        if value is not None and before is not None and abs(value - before) > change + 1e-12:
            why.append(f"real photos {name} {value:.3f} against FP32's {before:.3f} (more than {change} apart)")
    return why


def select_int8(offered: list[str], figures_of, params: Params, *, progress: bool = False
                ) -> tuple[list[str], list[dict], dict]:
    """(units kept as INT8, every attempt, the FP32 figures): ``figures_of(units)`` gives the whole reviewer's test
    figures with ``units`` as INT8. All ``offered`` at once; when that does not hold, one at a time in the order
    given, each kept only if the reviewer holds with it and those kept before."""
    fp32 = figures_of([])
    tried, kept = [], []

    def attempt(units: list[str]) -> bool:
        figures = figures_of(units)
        why = int8_holds(figures, fp32, params)
        tried.append({"int8": units, "holds": not why, "why": why, "test": figures})
        return not why

    if offered:
        if attempt(list(offered)):
            kept = list(offered)
        else:
            for unit in offered:
                if attempt([*kept, unit]):
                    kept.append(unit)
                if progress:
                    print(f"int8 {unit}: {'kept' if unit in kept else 'FP32: ' + '; '.join(tried[-1]['why'])}",
                          flush=True)
    return kept, tried, fp32


def choose_int8(root: Path, params: Params, bundles: dict[str, Path], memo: GraphMemo, *,
                progress: bool = False) -> dict:
    """Quantize every graph of the candidates' ``bundles``, keep as INT8 those the whole reviewer holds with (its
    test figures through ``memo``), and write the choice into each bundle's ``meta.json``. All faster units are
    tried at once; when that does not hold, one at a time, the largest saving first, each kept only if the
    reviewer holds with it and those kept before. Returns the record ``metrics/reviewer.json`` keeps under ``int8``."""
    from pipelines.release.quantize import STORE, calibration_boxes, calibration_photos, quantize_bundle, set_precision
    from pipelines.release.registry import content_hash

    from pipelines.release.real_photos import FAMILIES as REAL_PHOTO_FAMILIES, TrainingPhotoMemo

    cfg = params.serving.int8
    photos, boxes, cache = calibration_photos(root, params), calibration_boxes(root, params), {}
    per_family = {family: quantize_bundle(path, photos, cache=cache, store=root / STORE, boxes=boxes)
                  for family, path in bundles.items()}
    report = {unit: r for units in per_family.values() for unit, r in units.items()}
    offered = sorted((u for u, r in report.items() if r["fp32_ms"] >= cfg.min_speedup * r["int8_ms"]),
                     key=lambda u: report[u]["int8_ms"] - report[u]["fp32_ms"])
    real = TrainingPhotoMemo(params, bundles) if offered and set(bundles) & set(REAL_PHOTO_FAMILIES) else None

    def figures(units) -> dict:
        return {**memo.figures(units), **({"real_photos": real.figures(units)} if real is not None else {})}

    kept, tried, fp32 = select_int8(offered, figures, params, progress=progress)
    for path in bundles.values():
        set_precision(path, kept)
    return {"served": kept, "fp32_test": fp32, "tried": tried,
            "families": {family: sorted(u for u in kept if u in units) for family, units in per_family.items()},
            "units": {u: {**r, "offered": u in offered, "served": u in kept} for u, r in sorted(report.items())},
            "content_hashes": {family: content_hash(family, root) for family in bundles},
            "calibration_photos": len(photos),
            "graph_runs": memo.runs,         # the families each test review ran: the rest came from the memo
            "real_photo_runs": None if real is None else real.runs,   # ...and each real-photo measurement
            "real_photo_views": None if real is None else len(real.photos.base)}


def lowest_photo_recall(split: dict) -> tuple[str | None, float | None]:
    """The defect the reviewer catches least often on a split's figures, and that share."""
    measured = {d: r for d, r in split["photo_recall"].items() if r is not None}
    if not measured:
        return None, None
    worst = min(measured, key=measured.get)
    return worst, measured[worst]


def summary(metrics: dict) -> str:
    """A few lines for the CLI and the DAG's log."""
    lines = []
    for split in (*SPLITS, LIVE):
        if split not in metrics:
            continue
        m = metrics[split]
        worst, value = lowest_photo_recall(m)
        cap = "n/a" if m["clean_auto_pass"] is None else f"{m['clean_auto_pass']:.3f}"
        low = "n/a" if value is None else f"{worst} {value:.3f}"
        lines.append(f"{split}: auto-pass {m['auto_pass']:.3f}, clean auto-pass {cap} ({m['clean']} clean of "
                     f"{m['n']} photos); lowest photo recall {low}")
    return "\n".join(lines)


def reviewer_figures(family: str, root: Path) -> dict | None:
    """From metrics/reviewer.json (the ``reviewer`` stage): per split, clean auto-pass and the photo and reason
    recall of the family's defects; None before that stage has run."""
    path = Path(root) / METRICS_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    mine = families.get(family).defects
    out = {}
    for split in ("test", "live_mix"):
        m = doc.get(split)
        if not m:
            continue
        keep = [d for d in m["photo_recall"] if d in mine or any(d.startswith(f"{x}:") for x in mine)]
        out[split] = {"clean_auto_pass": m["clean_auto_pass"], "auto_pass": m.get("auto_pass"),
                      **{f"photo_recall.{d}": m["photo_recall"][d] for d in keep},
                      **{f"reason_recall.{d}": m["reason_recall"][d] for d in keep}}
        generated = m.get("generated_outside_catalogue")
        if generated and "outside_catalogue" in keep and generated.get("photo_recall_pooled") is not None:
            out[split]["photo_recall_pooled.outside_catalogue"] = generated["photo_recall_pooled"]
            out[split]["photos_pooled.outside_catalogue"] = generated["photos_pooled"]
    return out
