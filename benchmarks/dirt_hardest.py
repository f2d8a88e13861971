"""The dirt positives the sticker/dirt net scores lowest, shown: what sets the dirt threshold.

Usage, on a project after the reviewer stage (its models/reviewer/scores.parquet: every validation and test
photo's served scores):

    .venv/bin/python benchmarks/dirt_hardest.py <project> [--data <workspace with the versioned data>] [--n 8]

For the ``n`` dirt positives of validation and test with the lowest served dirt score, it records each one's
labels (largest visible spot's area and contrast, visible spots, annotator blur score, category, background), the
share of clean photos scoring at or above it, and draws a contact sheet: the photo with the spot boxed, and a 4x
zoom of the 64 px around the spot. The dirt threshold catches all but about 2 of the 98 validation positives
(``recall_targets.dirt`` as a lower bound), so these few photos decide how many clean photos the check flags.
Writes benchmarks/results/dirt_hardest.json and dirt_hardest.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from results_header import header

RESULTS = Path(__file__).parent / "results"
ATTRS = ["dirt_max_area_px", "dirt_max_contrast", "dirt_spots_visible", "annotator_blur_score", "category",
         "background"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="where the versioned data is (default: the project)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "dirt_hardest.json")
    args = ap.parse_args()
    from pipelines.train.families import common

    project = args.project.resolve()
    labels = common.load_frame((args.data or project).resolve()).rename(columns={"blur_score": "annotator_blur_score"})
    labels["file"] = [Path(p).name for p in labels["path"]]
    scores = pd.read_parquet(project / "models" / "reviewer" / "scores.parquet")
    scores = scores[scores["split"].isin(["val", "test"])].copy()
    scores["file"] = [Path(p).name for p in scores["path"]]
    frame = scores.drop(columns=["category"]).merge(labels[["file", "boxes", *ATTRS]], on="file", how="left")
    clean = frame.loc[frame["truth.clean"], "dirt_score"].to_numpy()
    positives = frame[frame["truth.dirt"]].sort_values("dirt_score").head(args.n)
    side, rows = 256, []
    sheet = Image.new("RGB", (4 * side, ((len(positives) + 3) // 4) * 2 * side), "white")
    for i, (_, r) in enumerate(positives.iterrows()):
        photo = Image.open(labels.set_index("file").loc[r["file"], "path"]).convert("RGB").resize((side, side))
        spots = [b for b in r["boxes"] if b["label"] == "dirt"]
        x0, y0, x1, y1 = (v * side for v in (spots[0]["x0"], spots[0]["y0"], spots[0]["x1"], spots[0]["y1"]))
        boxed = photo.copy()
        ImageDraw.Draw(boxed).rectangle((x0 - 4, y0 - 4, x1 + 4, y1 + 4), outline=(255, 0, 0))
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        zoom = photo.crop((cx - 32, cy - 32, cx + 32, cy + 32)).resize((side, side), Image.NEAREST)
        sheet.paste(boxed, ((i % 4) * side, (i // 4) * 2 * side))
        sheet.paste(zoom, ((i % 4) * side, (i // 4) * 2 * side + side))
        rows.append({"photo": r["file"], "split": r["split"], "dirt_score": round(float(r["dirt_score"]), 5),
                     "clean_photos_at_or_above": round(float(np.mean(clean >= r["dirt_score"])), 4),
                     **{a: (round(float(r[a]), 3) if isinstance(r[a], (float, np.floating)) else
                            int(r[a]) if isinstance(r[a], (int, np.integer)) else r[a]) for a in ATTRS}})
    png = args.out.with_suffix(".png")
    sheet.save(png)
    args.out.write_text(json.dumps({
        **header("python benchmarks/dirt_hardest.py <project> --data <workspace>"),
        "project": str(project), "clean_photos": int(len(clean)),
        "dirt_positives": {s: int((frame["truth.dirt"] & (frame["split"] == s)).sum()) for s in ("val", "test")},
        "contact_sheet": png.name, "hardest": rows}, indent=1) + "\n")
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
