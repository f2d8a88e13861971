"""Does the unknown-SKU alarm stop fewer genuine claims when the claimed SKU's similarity is read against that SKU's
own spread? Read-only: the workspaces' trained embeddings, galleries and calibration frames.

Usage, after default-size demos (or their retrained copies):

    .venv/bin/python benchmarks/sku_claim_reference.py /tmp/demo_seed9 --out benchmarks/results/sku_claim_reference.json

Today the alarm compares the claimed SKU's similarity with one threshold for every SKU. Some SKUs' photos match their
gallery closely (a black phone shot flat), others loosely (headphones at any angle), so the one threshold that stops
a look-alike product listed under a tight SKU also stops genuine photos of the loose ones. Each variant here scores a
claim against a reference taken from the gallery alone, so that a SKU enrolled with ``reviewops gallery add`` has one
at once, without labelled photos: each gallery photo's similarity to the closest other gallery photo of its SKU
(leave one out), averaged (``mean``) or the lowest (``min``) over the SKU's photos.

- ``absolute``: the similarity (today's rule);
- ``offset_mean`` / ``offset_min``: the similarity less the SKU's reference;
- ``ratio_mean``: the distance (1 - similarity) in units of the SKU's own (1 - reference).

Each variant's threshold is calibrated as ``reviewops`` calibrates today's (:func:`pipelines.train.families.sku.
calibrate_frame`: the margin from every wrong claim of every validation photo, then the similarity threshold so that
``recall_targets.unknown_sku`` of the outside-catalogue calibration photos are caught, at its confidence), and the
alarm is: claimed SKU not enrolled, or another SKU leads by the margin, or the claim's score at or under the
threshold. Reported per split: genuine false alarms (trained and held-out SKUs), outside-catalogue recall, wrong-claim
recall by swap kind.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header
from sku_genuine_alarms import _share, workspace_params
from sku_wrong_claims import scored

VARIANTS = ("absolute", "offset_mean", "offset_min", "ratio_mean")


def gallery_reference(vectors: np.ndarray, skus: np.ndarray) -> dict[str, dict[str, float]]:
    """Per SKU, each gallery photo's similarity to the closest other photo of its SKU: their mean and lowest (a SKU
    with one photo has none)."""
    v = np.asarray(vectors, dtype=np.float64)
    sims = v @ v.T
    skus = np.asarray(skus).astype(str)
    out = {}
    for sku in np.unique(skus):
        rows = np.flatnonzero(skus == sku)
        if len(rows) < 2:
            continue
        block = sims[np.ix_(rows, rows)]
        np.fill_diagonal(block, -np.inf)
        loo = block.max(axis=1)
        out[sku] = {"mean": float(loo.mean()), "min": float(loo.min())}
    return out


def claim_score(frame: pd.DataFrame, reference: dict, variant: str) -> np.ndarray:
    """The claim's score under ``variant`` (higher: more like the claimed SKU); NaN where the claimed SKU has no
    similarity (not among the candidates) or no reference."""
    sim = frame["similarity"].to_numpy(dtype=float)
    if variant == "absolute":
        return sim
    stat = variant.split("_")[1]
    ref = np.array([reference.get(str(k), {}).get(stat, np.nan) for k in frame["claimed"]], dtype=float)
    if variant.startswith("offset"):
        return sim - ref
    return -(1.0 - sim) / np.maximum(1.0 - ref, 1e-6)


def alarm(frame: pd.DataFrame, score: np.ndarray, thresholds: dict, known) -> np.ndarray:
    enrolled = np.isin(frame["claimed"].to_numpy().astype(str), list(known))
    margin = frame["margin"].to_numpy(dtype=float)
    return (~enrolled | np.isnan(margin) | (margin <= thresholds["margin"]) | np.isnan(score)
            | (score <= thresholds["similarity"]))


def figures(frame: pd.DataFrame, flag: np.ndarray) -> dict:
    g, t = frame["genuine"].to_numpy(), frame["trained"].to_numpy()
    return {"genuine_false_alarm_rate": _share(flag, g), "genuine_trained": _share(flag, g & t),
            "genuine_untrained": _share(flag, g & ~t),
            "outside_catalogue_recall": _share(flag, frame["outside"]),
            "wrong_claim_recall": _share(flag, frame["wrong_claim"]),
            "wrong_claim_recall_colour": _share(flag, frame["swap"] == "colour"),
            "wrong_claim_recall_layout": _share(flag, frame["swap"] == "layout"),
            "photos": {"genuine": int(g.sum()), "outside_catalogue": int(frame["outside"].sum()),
                       "wrong_claim": int(frame["wrong_claim"].sum())}}


def measure(workspace: Path, scratch: Path) -> dict:
    from pipelines.serve.decision import sku_alarm
    from pipelines.train.families import sku

    params = workspace_params(workspace, scratch)
    cal, test, known, arch, gallery = scored(workspace, params)
    reference = gallery_reference(gallery[0].numpy(), gallery[1])
    targets = sku.alarm_targets(params)
    out = {"seed": params.seed, "holdout_skus": sorted(arch["holdout_skus"]),
           "gallery_reference": {k: round(float(np.mean([r[k] for r in reference.values()])), 4)
                                 for k in ("mean", "min")} | {"skus": len(reference)},
           "variants": {}}
    for variant in VARIANTS:
        frame = cal.assign(similarity=claim_score(cal, reference, variant))
        thresholds, _ = sku.calibrate_frame(frame, targets, params.recall_targets.confidence,
                                            params.recall_targets.sku_mismatch_claims, known)
        row = {"thresholds": {k: None if v is None else round(float(v), 4) for k, v in thresholds.items()}}
        val = cal[cal["split"] == "val"]
        for name, s in (("val", val), ("test", test)):
            row[name] = figures(s, alarm(s, claim_score(s, reference, variant), thresholds, known))
        if variant == "absolute":                # the rule above is the service's: check it on test
            service = np.array([sku_alarm(c, k, thresholds, known) is not None
                                for c, k in zip(test["candidates"], test["claimed"])])
            mine = alarm(test, claim_score(test, reference, variant), thresholds, known)
            row["test_photos_where_the_service_rule_differs"] = int((service != mine).sum())
        out["variants"][variant] = row
        print(workspace.name, variant, json.dumps(row["test"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspaces", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sku_claim_reference.json")
    args = ap.parse_args()
    command = "python benchmarks/sku_claim_reference.py " + " ".join(f"<workspace {i + 1}>"
                                                                      for i in range(len(args.workspaces)))
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(w.resolve(), Path(scratch)) for w in args.workspaces]
    args.out.resolve().write_text(json.dumps({**header(command), "workspaces": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
