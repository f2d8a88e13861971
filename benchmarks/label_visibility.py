"""Labels people could give: of the dirt spots and edits the generator draws, the share the visibility rule
(params.yaml ``labels.visibility``, docs/data.md) judges invisible, so drawn but not labelled.

Generates a batch with the default generator params (``pipelines.data.generate.generate_batch``) and counts
from its manifest: per defect, what was drawn, what is labelled, the invisible share (with a one-sided 95%
Clopper-Pearson upper bound, as few are invisible), and where the drawn defects stand against the thresholds
(the lowest and 5th-percentile contrast of a photo's most visible spot, trace per edit type). The default mix
draws dirt on 12% and an edit on 12% of photos; a second batch of the same size and seed with dirt and an
edit on every photo (``--shift dirt_rate=1,manipulation_rate=1``, nothing else changed) gives the same
shares on eight times as many defects.

    .venv/bin/python benchmarks/label_visibility.py [--n 2000] [--seed 7]   # writes benchmarks/results/label_visibility.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
from scipy.stats import beta

from pipelines.data.generate import generate_batch
from pipelines.data.manifest import MANIPULATION_TYPES, read_manifest
from pipelines.params import load_params

OUT = Path(__file__).parent / "results" / "label_visibility.json"


def _revision() -> dict:
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                           text=True)
    return {"git_commit": head.stdout.strip() or None, "work_tree_modified": bool(dirty.stdout.strip())}


ENRICHED = {"dirt_rate": "1.0", "manipulation_rate": "1.0"}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _upper95(part: int, whole: int) -> float | None:
    """One-sided 95% Clopper-Pearson upper bound of the share ``part / whole``."""
    if not whole:
        return None
    return 1.0 if part >= whole else round(float(beta.ppf(0.95, part + 1, whole - part)), 4)


def _q(series: pd.Series) -> dict:
    """The lowest, 5th-percentile and median value of a measurement over the defects drawn."""
    if series.empty:
        return {}
    return {"min": round(float(series.min()), 4), "p05": round(float(series.quantile(0.05)), 4),
            "median": round(float(series.median()), 4)}


def dirt_figures(df: pd.DataFrame) -> dict:
    drawn = df[df["dirt_spots_drawn"] > 0]
    spots, visible = int(drawn["dirt_spots_drawn"].sum()), int(drawn["dirt_spots_visible"].sum())
    labelled = int(drawn["dirt"].sum())
    blurred = drawn["blur_kind"] != "none"
    return {"photos_drawn": len(drawn), "photos_labelled": labelled,
            "photos_invisible_share": _share(len(drawn) - labelled, len(drawn)),
            "photos_invisible_share_upper95": _upper95(len(drawn) - labelled, len(drawn)),
            "spots_drawn": spots, "spots_labelled": visible, "spots_invisible_share": _share(spots - visible, spots),
            "spots_invisible_share_upper95": _upper95(spots - visible, spots),
            "photos_invisible_blurred": int((~drawn["dirt"] & blurred).sum()),
            "spots_drawn_in_blurred_photos": int(drawn.loc[blurred, "dirt_spots_drawn"].sum()),
            "spots_invisible_in_blurred_photos": int((drawn["dirt_spots_drawn"] - drawn["dirt_spots_visible"])[blurred].sum()),
            "most_visible_spot_contrast": _q(drawn["dirt_max_contrast"]),
            "most_visible_spot_area_px": _q(drawn["dirt_max_area_px"])}


def manipulation_figures(df: pd.DataFrame) -> dict:
    out = {}
    for kind in ["all", *[k for k in MANIPULATION_TYPES if k != "none"]]:
        drawn = df[df["manipulation_drawn"] != "none"] if kind == "all" else df[df["manipulation_drawn"] == kind]
        labelled = int(drawn["manipulated"].sum())
        out[kind] = {"drawn": len(drawn), "labelled": labelled,
                     "invisible_share": _share(len(drawn) - labelled, len(drawn)),
                     "invisible_share_upper95": _upper95(len(drawn) - labelled, len(drawn)),
                     "trace": _q(drawn["manipulation_trace"])}
        if kind == "clone":                   # backdrop onto backdrop: hidden by the clone rule
            rule = load_params().labels.visibility
            out[kind]["hidden_as_backdrop_onto_backdrop"] = int(((drawn["clone_object_share"] < rule.clone_min_object_share)
                                                                 & (drawn["clone_coarse_trace"] < rule.clone_min_coarse_trace)).sum())
            out[kind]["object_share"] = _q(drawn["clone_object_share"])
            out[kind]["coarse_trace"] = _q(drawn["clone_coarse_trace"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    args = ap.parse_args()
    params = load_params()
    seed = params.seed if args.seed is None else args.seed
    with tempfile.TemporaryDirectory() as tmp:
        df = read_manifest(generate_batch(tmp, "visibility", args.n, seed, params))
        enriched = read_manifest(generate_batch(tmp, "visibility-enriched", args.n, seed, params, shift=ENRICHED))
    command = "python benchmarks/label_visibility.py" + (f" --n {args.n}" if args.n != 2000 else "") + \
        (f" --seed {args.seed}" if args.seed is not None else "")
    result = {"command": command, "date": dt.date.today().isoformat(), **_revision(),
              "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
              "photos": len(df), "seed": seed, "image_size": params.data.image_size,
              "generator": params.generator.model_dump(), "thresholds": params.labels.visibility.model_dump(),
              "default_mix": {"dirt": dirt_figures(df), "manipulation": manipulation_figures(df)},
              "every_photo_with_dirt_and_edit": {"shift": ENRICHED, "dirt": dirt_figures(enriched),
                                                 "manipulation": manipulation_figures(enriched)}}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
