"""The real-photo blur check's unblurred views, each with the blur score it got: are the "sharp" views sharp?

    # after `reviewops real-photos` (or `dvc repro real_photos`) in a demo workspace
    python benchmarks/real_photo_views.py /tmp/demo --out benchmarks/results/real_photo_views.jpg

Draws every check photo's unblurred views (``pipelines.release.real_photos.views``: the very crops the check
scores) in a grid, one row per photo, each titled with the blur score the workspace's candidate gave it
(``plots/real_photos/scores.csv``), whether it was answered ``blur``, and the variance of the Laplacian
(-log variance, higher = blurrier) beside the mean of every view's at Gaussian sigma 1 (the lightest blur of
the check). Photos named in ``real_photos.soft_focus`` are marked. Writes the image and a JSON of the same
figures next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_photo_views.jpg")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.params import load_params
    from pipelines.release.real_photos import PLOT_DIR, views

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")   # this checkout's soft_focus
    workspace_params = load_params(args.workspace / "params.yaml")
    if [workspace_params.real_photos.checks, workspace_params.real_photos.seed, workspace_params.real_photos.check_views] \
            != [params.real_photos.checks, params.real_photos.seed, params.real_photos.check_views]:
        raise SystemExit("the workspace scored other check views than this checkout's params.yaml makes")
    scores = pd.read_csv(args.workspace / PLOT_DIR / "scores.csv")
    blur = scores[(scores["check"] == "blur") & (scores["kind"] == "gaussian")]
    sharp = blur[blur["strength"] == 0].set_index(["photo", "view"])
    sigma1 = float(blur.loc[blur["strength"] == blur.loc[blur["strength"] > 0, "strength"].min(), "laplacian"].mean())
    base = views(params)
    photos = list(params.real_photos.checks)
    cols = params.real_photos.check_views
    fig, axes = plt.subplots(len(photos), cols, figsize=(2.3 * cols, 2.6 * len(photos)))
    rows = []
    for ref, k, img in base:
        s = sharp.loc[(ref, k)]
        soft = ref in params.real_photos.soft_focus
        rows.append({"photo": ref, "view": int(k), "score": round(float(s["score"]), 4), "flagged": bool(s["flagged"]),
                     "laplacian": round(float(s["laplacian"]), 3), "soft_focus": soft})
        ax = axes[photos.index(ref), k]
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "#d62728" if s["flagged"] else "#2ca02c"
        ax.set_title(f"{s['score']:.2f}{' blur' if s['flagged'] else ''}  lap {s['laplacian']:.1f}", fontsize=8,
                     color=colour)
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2)
        if k == 0:
            ax.set_ylabel(ref.split(":", 1)[1][:16] + ("\n(soft_focus)" if soft else ""), fontsize=8)
    threshold = json.loads((args.workspace / "metrics" / "real_photos.json").read_text())["blur"]["threshold"]
    fig.suptitle(f"Unblurred views of the real-photo checks: blur score (threshold {threshold:.3f}; red: answered "
                 f"blur) and -log var(Laplacian) (mean at sigma 1: {sigma1:.1f})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80, **({"pil_kwargs": {"quality": 85}} if args.out.suffix == ".jpg" else {}))
    frame = pd.DataFrame(rows)
    in_focus, soft = frame[~frame["soft_focus"]], frame[frame["soft_focus"]]
    summary = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), "<demo workspace>",
                                                 *sys.argv[2:]]),
               "date": date.today().isoformat(), "blur_threshold": threshold,
               "laplacian_mean_at_lightest_blur": round(sigma1, 3),
               "in_focus": {"views": len(in_focus), "flagged": int(in_focus["flagged"].sum()),
                            "laplacian_max": round(float(in_focus["laplacian"].max()), 3)},
               "soft_focus": {"photos": list(params.real_photos.soft_focus), "views": len(soft),
                              "flagged": int(soft["flagged"].sum()),
                              "laplacian_median": round(float(np.median(soft["laplacian"])), 3) if len(soft) else None},
               "views": rows}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "views"}))


if __name__ == "__main__":
    main()
