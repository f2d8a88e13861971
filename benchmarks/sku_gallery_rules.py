"""The SKU check's gallery and matching rule, measured on the open-set figures without retraining the embedding.

Usage, after a default-size `make demo` (or any workspace whose sku candidate is trained):

    .venv/bin/python benchmarks/sku_gallery_rules.py /tmp/demo --per-sku 3 6 10 20 --rules nearest prototype

The workspace's trained SKU embedding embeds every catalogue product photo of train, validation and test once.
For each gallery size (``--per-sku``: that many training photos of every catalogue SKU, defect-free first, picked
as ``reviewops gallery`` seeds it: :func:`pipelines.data.gallery.pick`; the held-out SKUs are enrolled the same way,
never trained on) and each matching rule (``nearest``: a SKU scores its closest gallery photo, the service's rule;
``prototype``: the cosine similarity to the SKU's mean gallery embedding), the alarm is calibrated exactly as the family calibrates it (validation's product photos and the training
split's outside-catalogue ones: :func:`pipelines.train.families.sku.calibration_frame`, params' targets and
confidence), and the test split is measured with the family's own figures
(:func:`pipelines.train.families.sku.open_set_metrics`: seen_top1, enrolled_untrained_top1, wrong_claim_recall
per swap kind, outside_catalogue_recall, genuine_false_alarm_rate), with the genuine validation and test claims
whose nearest SKU is another one, by kind of twin. Writes benchmarks/results/sku_gallery_rules.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header

RESULTS = Path(__file__).parent / "results"


def rivals(scored: pd.DataFrame) -> dict:
    """Genuine claims (the claimed SKU shown and enrolled) whose nearest gallery SKU is another one, by how that SKU
    differs from the one shown (:func:`pipelines.data.synth.catalog.swap_kind`: colour or layout variant, other)."""
    from pipelines.data.synth.catalog import sku_index, swap_kind

    g = scored[scored["genuine"] & (scored["predicted"] != scored["sku_id"])]
    kinds = [swap_kind(t, p) if t in sku_index() and p in sku_index() else "other"
             for t, p in zip(g["sku_id"], g["predicted"])]
    return {"claims": int(len(g)), "of_genuine": int(scored["genuine"].sum()),
            **{f"{k}_variant" if k != "other" else "other": kinds.count(k) for k in ("layout", "colour", "other")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--per-sku", type=int, nargs="+", default=[3, 6, 10, 20])
    ap.add_argument("--rules", nargs="+", default=["nearest", "prototype"], choices=["nearest", "prototype"])
    ap.add_argument("--out", type=Path, default=RESULTS / "sku_gallery_rules.json")
    args = ap.parse_args()

    import torch

    from pipelines.data.dataset import split_frame
    from pipelines.data.gallery import pick
    from pipelines.params import load_params
    from pipelines.serve.decision import sku_alarm, sku_candidates
    from pipelines.train.families import common, sku as family

    root = args.workspace.resolve()
    params = load_params(root / "params.yaml")
    cfg = params.train.sku
    df = common.load_frame(root)
    net, arch = family.load_model(root)
    started = time.time()

    def embed(frame: pd.DataFrame) -> torch.Tensor:
        x = family.embed_input(root, params, net, arch, frame, "detected")      # as the family embeds its gallery
        return common.predict(net.embed_features, x).float()

    train = family.catalogue(split_frame(df, "train"))
    skus = sorted(set(train["sku_id"]))
    splits = {s: family.products(split_frame(df, s)) for s in ("val", "test")}
    outside = family.products(split_frame(df, "train"))
    splits["train_outside"] = outside[~outside["sku_id"].isin(skus)].reset_index(drop=True)
    vectors = {s: embed(f) for s, f in splits.items()}
    pool = pick(train, skus, max(args.per_sku), cfg.gallery_blur_cutoff)
    pool_vectors = embed(pool)
    print(f"embedded {len(pool)} gallery candidates and {sum(len(f) for f in splits.values())} photos in "
          f"{time.time() - started:.0f} s", flush=True)

    def scored(split: str, g_vectors: torch.Tensor, g_skus: np.ndarray) -> pd.DataFrame:
        cands = [sku_candidates(row, g_skus, cfg.candidates) for row in (vectors[split] @ g_vectors.T).numpy()]
        return family.scored_frame(splits[split], cands, set(g_skus), arch["classes"])

    rows = []
    for per_sku in args.per_sku:
        keep = pool.groupby("sku_id", sort=True).head(per_sku).index.to_numpy()
        g, g_skus = pool_vectors[keep], pool.loc[keep, "sku_id"].to_numpy()
        for rule in args.rules:
            if rule == "prototype":
                order = sorted(set(g_skus))
                means = torch.stack([g[torch.as_tensor(g_skus == s)].mean(0) for s in order])
                g_rule, skus_rule = torch.nn.functional.normalize(means, dim=1), np.array(order)
            else:
                g_rule, skus_rule = g, g_skus
            known = frozenset(skus_rule)
            val, test = scored("val", g_rule, skus_rule), scored("test", g_rule, skus_rule)
            cal = pd.concat([val, scored("train_outside", g_rule, skus_rule)], ignore_index=True)
            thresholds, _ = family.calibrate_frame(cal, family.alarm_targets(params), params.recall_targets.confidence)
            alarm = np.array([sku_alarm(c, k, thresholds, known) is not None
                              for c, k in zip(test["candidates"], test["claimed"])], dtype=bool)
            m = family.open_set_metrics(test, alarm)
            rows.append({"per_sku": per_sku, "rule": rule, "gallery_photos": int(len(g_skus)),
                         "thresholds": {k: None if v is None else round(float(v), 6) for k, v in thresholds.items()},
                         "test": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()},
                         "genuine_claims_another_sku_on_top": rivals(pd.concat([val, test]))})
            t = rows[-1]["test"]
            print(f"{per_sku:>3} per SKU, {rule:>9}: seen top-1 {t['seen_top1']:.3f}, enrolled-untrained top-1 "
                  f"{t['enrolled_untrained_top1']:.3f}, genuine false alarms {t['genuine_false_alarm_rate']:.3f}, "
                  f"wrong-claim recall {t['wrong_claim_recall']:.3f}, outside {t['outside_catalogue_recall']:.3f}",
                  flush=True)
    doc = {**header("python benchmarks/sku_gallery_rules.py <demo workspace> --per-sku "
                    f"{' '.join(map(str, args.per_sku))} --rules {' '.join(args.rules)}"),
           "targets": dict(family.alarm_targets(params)), "confidence": params.recall_targets.confidence,
           "note": "one trained embedding (seed %d), not retrained; the gallery re-picked from training photos" % params.seed,
           "rows": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
