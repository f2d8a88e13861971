"""The whole reviewer on a larger sample of the live mix than the reviewer stage's, so that a live-mix figure resting
on a few dozen photos (dirty ones: 45 of the stage's 600; wrong claims: 22) rests on a few hundred.

Usage, in workspaces whose reviewer stage has run (``models/reviewer/bundles``, ``metrics/reviewer.json``):

    .venv/bin/python benchmarks/live_mix_sample.py WS[=LABEL] ... --n 3000 --seed 101 \\
        --out benchmarks/results/live_mix_sample.json

For each workspace: ``n`` photos of the live mix (params.yaml ``live_mix`` rates) at ``--seed``, not the stage's
``live_mix.seed``, rendered once under the workspace's ``.reviewops/live_mix`` (:func:`pipelines.data.generate.
live_mix_batch`: workspaces of the same data and generator settings get the same photos, so their figures are
paired); reviewed by the workspace's exported bundles as the stage reviews its own sample
(``ReviewerModels.as_served``, the INT8 units the stage chose); the stage's figures on them
(:func:`pipelines.release.reviewer.split_metrics`): clean auto-pass, auto-pass, and per defect the photo recall with
its positives and a 95% Clopper-Pearson interval, its floor beside it. The stage's own live-mix figures
(``metrics/reviewer.json``) are kept beside them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from results_header import header


def interval(k: int, n: int) -> list[float] | None:
    """The two-sided 95% Clopper-Pearson interval of ``k`` of ``n`` (from the bound the thresholds are set with)."""
    from pipelines.train.evaluate import recall_lower_bound

    if n == 0:
        return None
    return [round(recall_lower_bound(k, n, 0.975), 4), round(1 - recall_lower_bound(n - k, n, 0.975), 4)]


def figures(split: dict, floors: dict) -> dict:
    """clean auto-pass, auto-pass and per defect: photo recall, positives, interval, floor."""
    from pipelines.release.operating_point import floor_of

    out = {"photos": split["n"], "clean": split["clean"], "clean_auto_pass": split["clean_auto_pass"],
           "auto_pass": split["auto_pass"], "defects": {}}
    for defect, n in split["positives"].items():
        recall = split["photo_recall"][defect]
        if not n or recall is None:
            continue
        k = round(recall * n)
        floor = floor_of(floors, defect)
        out["defects"][defect] = {"photo_recall": round(recall, 4), "sent": k, "positives": n,
                                  "interval95": interval(k, n), "floor": floor}
    return out


def measure(ws: Path, n: int, seed: int) -> dict:
    from pipelines.data.generate import LIVE_MIX_DIR, live_mix_batch
    from pipelines.data.manifest import read_photos
    from pipelines.params import load_params
    from pipelines.release.reviewer import LIVE, METRICS_FILE, defects_of, reviewed, split_metrics, stage_bundles
    from pipelines.serve.models import ReviewerModels

    params = load_params(ws / "params.yaml")
    stage = json.loads((ws / METRICS_FILE).read_text())
    floors = stage["floors"]
    started = time.perf_counter()
    photos = read_photos(live_mix_batch(ws / LIVE_MIX_DIR, params, n=n, seed=seed, progress=True))
    rendered = time.perf_counter() - started
    models = ReviewerModels.as_served(stage_bundles(ws), params)
    frame = reviewed(LIVE, photos, models, params, progress=True)
    review_seconds = time.perf_counter() - started - rendered
    return {"seed": params.seed, "sample": figures(split_metrics(frame, defects_of(frame)), floors),
            "stage_sample": {"seed": params.live_mix.seed, **figures(stage[LIVE], floors)},
            "render_seconds": round(rendered, 1), "review_seconds": round(review_seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", nargs="+", help="WS or WS=LABEL")
    ap.add_argument("--n", type=int, default=3000, help="photos in the sample")
    ap.add_argument("--seed", type=int, default=101, help="the sample's seed (not the stage's live_mix.seed)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    rows = {}
    for item in args.workspaces:
        path, _, label = item.partition("=")
        label = label or Path(path).name
        rows[label] = measure(Path(path).resolve(), args.n, args.seed)
        s = rows[label]["sample"]
        print(label, "clean auto-pass", s["clean_auto_pass"], "auto-pass", s["auto_pass"],
              {d: (v["sent"], v["positives"]) for d, v in s["defects"].items() if ":" not in d}, flush=True)
        args.out.write_text(json.dumps({
            **header("python benchmarks/live_mix_sample.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])),
            "n": args.n, "sample_seed": args.seed, "note": args.note, "workspaces": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
