"""What each family learned from its own training photos, as the reviewer serves it: the tiny profile's floor.

On the tiny profile (2 epochs at 96 px, 58 training photos, 15 validation and 23 test photos) the held-out figures
cannot tell a trained model from an untrained one (tests/models/test_families.py: 1-5 positives per check on
test). What they can tell apart is whether the model learned the photos it was trained on: a model with random
output ranks its training photos no better than chance, one the harness trained ranks them well. Measured over
three training seeds, trained against the same pipeline with every learning rate at 1e-12 (untrained heads on the
ImageNet trunk), by ``benchmarks/tiny_quality_floors.py`` (benchmarks/results/tiny_quality_floors.json).

Each figure is read on the training split through the bundles the reviewer stage exported
(``models/reviewer/bundles``, ONNX Runtime, :func:`pipelines.train.review.review`), so a broken export or a
served graph that drops what was learned fails too; the SKU net's classifier (not served: serving compares
embeddings with the gallery, and the tiny gallery holds the training photos themselves) is read on torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

# the floors of tests/models/test_families.py::test_each_family_learned_its_training_photos; each sits between
# the lowest trained and the highest untrained figure of benchmarks/results/tiny_quality_floors.json
# (trained 3 seeds / untrained max: blur 0.59-0.64 / 0.28, sticker 0.74-0.91 / 0.61, dirt 0.75-0.92 / 0.65,
# manipulation 0.73-0.88 / 0.63, prohibited 0.94-0.99 / 0.46, sku 0.16-0.33 / 0.05); ``chance`` in that file is how
# often output drawn at random would reach each floor on these photos
FLOORS = {"blur_spearman": 0.45, "sticker_missing_auc": 0.68, "dirt_auc": 0.70, "manipulation_auc": 0.68,
          "prohibited_auc_min": 0.75, "sku_classifier_top1": 0.10}


def _auc(labels, scores) -> float | None:
    labels = np.asarray(labels, dtype=bool)
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64))) if 0 < labels.sum() < len(labels) else None


def training_fit(repo: Path) -> dict:
    """Each family's figure on the training split of ``repo`` (a project the reviewer stage has run in), with
    the counts it rests on."""
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.params import load_params
    from pipelines.release.reviewer import OUT_DIR, _flat, truth
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.review import review

    repo = Path(repo)
    params = load_params(repo / "params.yaml")
    bundles = repo / OUT_DIR / "bundles"
    models = ReviewerModels({b.name: str(b) for b in sorted(bundles.iterdir())}, threads=params.train.threads)
    photos = split_frame(versioned_manifest(repo), "train").reset_index(drop=True)
    raw = pd.DataFrame([_flat(answer, r) for answer, r in review(models, photos, params)])

    cats = list(params.prohibited.categories)
    t = truth(photos, set(models.metas["sku"].get("gallery_skus", [])), cats)     # the labels, as the reviewer reads them
    rated = ~photos["blur_dropped"].astype(bool)
    stickered = photos["stickers_expected"] > 0
    product = photos["category"] != "none"
    out = {
        "photos": len(photos),
        "blur_photos": int(rated.sum()),
        "sticker_missing_photos": int(stickered.sum()),
        "dirt_photos": int(product.sum()),
        "blur_spearman": float(spearmanr(photos.loc[rated, "blur_score"], raw.loc[rated, "blur_score"]).statistic),
        "sticker_missing_auc": _auc(t.loc[stickered, "sticker_missing"], raw.loc[stickered, "sticker_missing_score"]),
        "sticker_missing_positives": int(t.loc[stickered, "sticker_missing"].sum()),
        "dirt_auc": _auc(t.loc[product, "dirt"], raw.loc[product, "dirt_score"]),
        "dirt_positives": int(t.loc[product, "dirt"].sum()),
        "manipulation_auc": _auc(t["manipulation"], raw["manipulation_score"]),
        "manipulation_positives": int(t["manipulation"].sum()),
        "prohibited_auc": {c: _auc(t[f"prohibited:{c}"], raw[f"prohibited_score.{c}"]) for c in cats},
        "prohibited_positives": {c: int(t[f"prohibited:{c}"].sum()) for c in cats},
    }
    measured = [v for v in out["prohibited_auc"].values() if v is not None]
    out["prohibited_auc_min"] = min(measured) if measured else None
    out.update(_sku_classifier(repo, params))
    return out


def _sku_classifier(repo: Path, params) -> dict:
    """Top-1 of the SKU net's classifier on the training photos it was trained on (its own SKUs only)."""
    import torch

    from pipelines.data.dataset import split_frame
    from pipelines.train.families import common, sku

    net, arch = sku.load_model(repo)
    df = sku.catalogue(split_frame(common.load_frame(repo), "train"))
    df = df[df["sku_id"].isin(arch["classes"])].reset_index(drop=True)
    x = sku.embed_input(repo, params, net, arch, df, "labelled")
    with torch.no_grad():
        logits = net.train_outputs(x.float().contiguous(memory_format=torch.channels_last))[1]
    predicted = np.asarray(arch["classes"])[logits.argmax(1).numpy()]
    return {"sku_classifier_top1": float((predicted == df["sku_id"].to_numpy()).mean()),
            "sku_classes": len(arch["classes"]), "sku_photos": len(df)}


def below_floors(fit: dict) -> dict[str, float | None]:
    """The figures of ``fit`` under their floor (or unmeasured): empty when every family learned."""
    return {k: fit.get(k) for k, floor in FLOORS.items() if fit.get(k) is None or fit[k] < floor}
