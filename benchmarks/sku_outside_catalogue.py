"""Which products outside the catalogue hold the SKU alarm's similarity threshold up, and what a lower target costs.

Usage, after a default-size `make demo` (its workspace holds the trained sku model and the gallery):

    .venv/bin/python benchmarks/sku_outside_catalogue.py /tmp/demo

With the workspace's trained model and gallery (:func:`pipelines.train.families.sku._scored`, the family's
own scoring), it reports per product outside the catalogue its claimed SKU and the similarity to it on
validation and test, the genuine claims' similarity quantiles, and for several outside-catalogue recall
targets the thresholds :func:`pipelines.train.families.sku.calibrate_alarm` chooses and the test figures
they give. Writes benchmarks/results/sku_outside_catalogue.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "sku_outside_catalogue.json"
TARGETS = (0.90, 0.95, 0.98)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--params", type=Path, default=None,
                    help="params.yaml to read (default: the workspace's; give this checkout's for an older workspace)")
    args = ap.parse_args()
    root = args.workspace.resolve()
    base = args.params.resolve() if args.params else root / "params.yaml"
    os.chdir(root)
    from pipelines.params import load_params
    from pipelines.train.families import sku

    from family_variants import _revision            # this folder's script: the workspace's git revision

    params = load_params(base)
    net, arch = sku.load_model(root)
    cal, test, _, gallery = sku.scored_frames(root, params, net, arch)     # cal: what the family calibrates on
    scored = {"val": cal[cal["split"] == "val"].reset_index(drop=True), "test": test}
    outside = {split: s[s["outside"]].groupby("sku_id").agg(
        claimed=("claimed", "first"), photos=("similarity", "size"), similarity_max=("similarity", "max"),
        similarity_median=("similarity", "median"), margin_median=("margin", "median")).round(4).reset_index()
        .to_dict(orient="records") for split, s in scored.items()}
    genuine = {split: dict(zip(("q05", "q10", "q50"), np.nanquantile(s.loc[s["genuine"], "similarity"], [0.05, 0.1, 0.5])
                                .round(4).tolist())) for split, s in scored.items()}
    test = scored["test"]
    rows = []
    for target in TARGETS:
        thresholds, _ = sku.calibrate_frame(cal, sku.alarm_targets(params, target), params.recall_targets.confidence)
        figures = sku.open_set_metrics(test, sku.alarms(test, thresholds, frozenset(gallery[1])))
        rows.append({"unknown_sku_target": target, "thresholds": thresholds,
                     **{k: figures[k] for k in ("outside_catalogue_recall", "wrong_claim_recall",
                                                "genuine_false_alarm_rate")}})
    OUT.write_text(json.dumps({
        "command": "python benchmarks/sku_outside_catalogue.py <demo workspace>"
                   + (f" --params {args.params}" if args.params else ""), "workspace_revision": _revision(root), "date": datetime.date.today().isoformat(),
        "confidence": params.recall_targets.confidence, "outside_catalogue": outside,
        "genuine_claim_similarity": genuine, "targets": rows}, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
