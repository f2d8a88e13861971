"""Matching rules for the SKU check measured on one trained embedding, without retraining.

Usage, after a default-size `make demo` (or any workspace whose sku candidate is trained):

    .venv/bin/python benchmarks/sku_match_variants.py /tmp/demo --variants pads:1.25 pads:1.15,1.25,1.35 \\
        local:0.5 local:0.5:3 --out benchmarks/results/sku_match_variants_seed7.json

Variants (the first should be ``pads:<the model's own pad>``: it reproduces the candidate's metrics/sku.json):

- ``pads:P1,P2,...``: test-time views of the product crop. A photo's embedding is the normalised mean of its
  embeddings at those crop pads (the square around the detector's product box, that many times its longer side).
  Serving would run the crop graph once more per extra pad.
- ``local:W[:G]``: a layout cue. The embedding is the mean of the tail's last map (``G`` x ``G`` places; 6 x 6 at
  192 px) projected by the embedding layer and the neck, which are linear: the pooled embedding averages the
  places' embeddings, and where on the product each part sits is lost. Camera layouts (dual vertical against dual
  diagonal, triple square against triple diagonal) are the same parts in other places. This variant scores a
  gallery photo by ``(1 - W) * cosine of the pooled embeddings + W * mean over places of the cosine of the places'
  embeddings``; the product crop is centred on the box and products turn by a few degrees, so places line up. It is
  one vector per photo (the pooled embedding scaled by sqrt(1 - W) beside the places' normalised embeddings scaled
  by sqrt(W / places)), so the gallery search, the candidates and the alarm are the service's own; the gallery
  would hold ``G * G`` more vectors' worth per photo. ``G`` < 6 averages the places into a coarser grid first.

Everything else is the family's evaluation (:func:`pipelines.train.families.sku.open_set_figures`): the same
calibration frame (validation, the training split's outside-catalogue photos, the generated outside-catalogue ones),
the same joint calibration and the same figures (open-set figures, every-claim recall per swap kind). Writes the figures per variant and the seconds each took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results_header import header

RESULTS = Path(__file__).parent / "results"


def parse(spec: str) -> dict:
    kind, _, rest = spec.partition(":")
    if kind == "pads" and rest:
        return {"kind": kind, "pads": [float(p) for p in rest.split(",")]}
    if kind == "local" and rest:
        weight, _, grid = rest.partition(":")
        if not 0.0 <= float(weight) <= 1.0:
            raise argparse.ArgumentTypeError(f"{spec}: the weight must be in [0, 1]")
        return {"kind": kind, "weight": float(weight), "grid": int(grid) if grid else None}
    raise argparse.ArgumentTypeError(f"{spec!r}: expected pads:P1,P2,... or local:W[:G]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--variants", nargs="+", default=["pads:1.25", "local:0.5"])
    ap.add_argument("--out", type=Path, default=RESULTS / "sku_match_variants.json")
    args = ap.parse_args()
    variants = [parse(v) for v in args.variants]

    import numpy as np
    import torch
    import torch.nn.functional as F

    from pipelines.params import load_params
    from pipelines.train.families import common, sku as family

    root = args.workspace.resolve()
    params = load_params(root / "params.yaml")
    net, arch = family.load_model(root)
    if not arch.get("crop_pad"):
        raise SystemExit(f"{root}: the SKU model reads whole photos (no crop_pad): the variants vary its crop")
    if not hasattr(net.tail, "spatial"):
        raise SystemExit(f"{root}: the SKU tail is not the full tail (stages, head conv, average pool)")
    if net.parts:
        raise SystemExit(f"{root}: the SKU model has stripes (train.sku.parts); the variants start from the plain one")

    served_vectors = family.embed_photos            # the service's own vectors (patched below, for the evaluation)

    def places(f: torch.Tensor, grid: int | None) -> list[torch.Tensor]:
        """The embedding of every place of the tail's last map, each (n, dim), normalised."""
        z = net.tail.spatial(f)
        if grid:
            z = F.adaptive_avg_pool2d(z, grid)
        return [F.normalize(net.neck(net.embed(place)), dim=1) for place in z.flatten(2).unbind(2)]

    def vectors(d, v: dict) -> torch.Tensor:
        """One vector per photo whose dot products are the variant's similarity."""
        if v["kind"] == "local":
            return common.predict(lambda f: family.weighted_parts(net.embed_features(f), places(f, v["grid"]),
                                                                  v["weight"]),
                                  family.embed_input(root, params, net, arch, d, "detected"))
        views = [served_vectors(root, params, net, {**arch, "crop_pad": p}, d) for p in v["pads"]]
        return F.normalize(torch.stack(views).mean(0), dim=1) if len(d) else views[0]

    def rounded(x):
        if isinstance(x, dict):
            return {k: rounded(value) for k, value in x.items()}
        return round(x, 4) if isinstance(x, float) and np.isfinite(x) else x

    rows = []
    for spec, v in zip(args.variants, variants):
        # the family's own evaluation, with these vectors wherever it embeds the gallery or a photo
        family.embed_photos = lambda root_, params_, net_, arch_, d, device=None, v=v: vectors(d, v)
        started = time.time()
        figures, _ = family.open_set_figures(root, params, net, arch)
        rows.append({"variant": spec, **v, "seconds": round(time.time() - started, 1),
                     "thresholds": rounded(figures["thresholds"]), "test": rounded(figures["test"]),
                     "validation": rounded(figures["validation"])})
        t = rows[-1]["test"]
        print(f"{spec}: genuine false alarms {t['genuine_false_alarm_rate']}, seen top-1 {t['seen_top1']}, "
              f"enrolled-untrained top-1 {t['enrolled_untrained_top1']}, outside {t['outside_catalogue_recall']}, "
              f"every claim {t['every_claim_recall']} ({rows[-1]['seconds']} s)", flush=True)
    doc = {**header("python benchmarks/sku_match_variants.py <demo workspace> --variants " + " ".join(args.variants)),
           "workspace_seed": params.seed, "model_pad": arch["crop_pad"], "targets": dict(family.alarm_targets(params)),
           "note": "one trained embedding, not retrained; the first row should be the model's own rule",
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
