"""The live traffic mix (params.yaml ``live_mix``) against the training mix (``generator``): the share of each
defect and of clean photos in a generated sample of each, by the reviewer's own ground truth
(:func:`pipelines.release.reviewer.truth`; here every SKU shown counts as catalogued, so ``clean`` is the
defect-free share with a correct claim).

    .venv/bin/python benchmarks/live_mix.py [--n 1000]   # writes benchmarks/results/live_mix.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

from pipelines.data.generate import generate_batch, live_mix_batch
from pipelines.data.manifest import read_manifest
from pipelines.params import load_params
from pipelines.release.reviewer import truth

OUT = Path(__file__).parent / "results" / "live_mix.json"


def shares(batch: Path, categories: list[str]) -> dict:
    df = read_manifest(batch)
    t = truth(df, set(df["sku_id"]) - {"none"}, categories)
    keep = ["clean", "blur", "sticker_missing", "dirt", "off_centre", "prohibited", "manipulation", "wrong_claim"]
    return {"photos": len(df), **{k: round(float(t[k].mean()), 4) for k in keep},
            "no_product": round(float((df["sku_id"] == "none").mean()), 4),
            "contradictory_blur_votes": round(float(df["blur_dropped"].mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    params = load_params()
    cats = list(params.prohibited.categories)
    with tempfile.TemporaryDirectory() as tmp:
        live = shares(live_mix_batch(tmp, params, n=args.n), cats)
        train = shares(generate_batch(tmp, "training-mix", args.n, params.live_mix.seed, params), cats)
    result = {"command": f"python benchmarks/live_mix.py --n {args.n}", "date": dt.date.today().isoformat(),
              "live_mix_rates": params.live_mix.rates, "seed": params.live_mix.seed,
              "live_mix": live, "training_mix": train}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
