"""The clean photos the dirt check scores highest, shown: what a style or model change made look dirty.

Usage, on a project after the reviewer stage (its models/reviewer/scores.parquet):

    .venv/bin/python benchmarks/dirt_clean_alarms.py <project> [--split test] [--n 12] [--out FILE.json]

Records the ``n`` clean photos (no defect of any kind) of the split with the highest served dirt score, their SKU,
product type and score, the served dirt threshold and how many clean photos are at or above it per product type, and
draws them side by side (the JSON's name with .png).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from pipelines.data.synth.catalog import sku_index
from results_header import header

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", type=Path, default=RESULTS / "dirt_clean_alarms.json")
    args = ap.parse_args()
    root = args.project.resolve()
    scores = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    # the threshold the reviewer serves: the detector bundle's
    threshold = json.loads((root / "models" / "reviewer" / "bundles" / "detector" / "meta.json").read_text())[
        "thresholds"]["dirt"]
    skus = sku_index()
    clean = scores[(scores["split"] == args.split) & (scores["truth.clean"] == 1)].copy()
    clean["product_type"] = [skus[s].product_type if s in skus else "none" for s in clean["sku_id"]]
    top = clean.sort_values("dirt_score", ascending=False).head(args.n)
    flagged = clean[clean["dirt_score"] >= threshold]
    per_type = {t: {"clean": int((clean["product_type"] == t).sum()),
                    "flagged": int((flagged["product_type"] == t).sum())} for t in sorted(set(clean["product_type"]))}
    tiles = []
    for _, row in top.iterrows():
        tile = Image.open(row["path"]).convert("RGB").resize((192, 192))
        ImageDraw.Draw(tile).text((4, 4), f"{row['sku_id']} {row['dirt_score']:.2f}", fill=(255, 0, 0))
        tiles.append(tile)
    cols = 6
    sheet = Image.new("RGB", (192 * cols, 192 * ((len(tiles) + cols - 1) // cols)), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * 192, (i // cols) * 192))
    png = args.out.with_suffix(".png")
    sheet.save(png)
    doc = {**header(f"python benchmarks/dirt_clean_alarms.py <project> --split {args.split} --n {args.n}"),
           "project": str(root), "split": args.split, "threshold": threshold, "clean": len(clean),
           "clean_flagged": len(flagged), "per_product_type": per_type,
           "highest": [{"path": Path(r["path"]).name, "sku_id": r["sku_id"], "product_type": r["product_type"],
                        "dirt_score": round(float(r["dirt_score"]), 4)} for _, r in top.iterrows()]}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("threshold", "clean", "clean_flagged", "per_product_type")}))
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
