"""Does the manipulation net flag real photos because their *scenes* are new to it? A hold-out test.

Usage, after a default-size `make demo` (its workspace holds the versioned data, the feature cache and the
manipulation candidate):

    .venv/bin/python benchmarks/manipulation_scene_holdout.py /tmp/demo \\
        [--hold-out mate:Garden.jpg mate:Storm.jpg ...] [--out benchmarks/results/manipulation_scene_holdout.json]

On unedited views of the real *training* photos the demo's candidate flags few (the reviewer stage's INT8 memo), on
the check photos most. That could be the scenes (seen against never seen) or the photos themselves (streets and
portraits against the training landscapes). This script separates the two with the same photos on both sides:

1. some training scenes (``--hold-out``; by default five Debian photos the generator never uses, so that they are
   nowhere in training once left out of ``real_photos.train``) are added to the check set, and the workspace's
   candidate, trained *with* them, is scored on their views and the check photos' (the project's own real-photo
   measurement, :func:`pipelines.release.real_photos.measure`, views, edits and decoding as the gate's);
2. the manipulation family is retrained in a scratch copy of the workspace (benchmarks/family_variants.py's, the
   other candidates linked) with those scenes taken out of ``real_photos.train`` (the same number of real samples,
   from the other scenes), evaluated (its threshold from validation, as the family's own), and scored on the same
   views.

If the held-out scenes go from rarely flagged (seen) to flagged like the check photos (unseen), the net reads
whether it knows a scene, and no threshold or pooling fixes that: more scenes do. Writes one JSON with, for each
model and each group of photos (held-out scenes, check photos), the false-alarm rate on the unedited views at the
model's own threshold, the edit recall, the median unedited score, the ROC AUC of edits against unedited views, and
each photo's median unedited score.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from family_variants import _revision, scratch_project

RESULTS = Path(__file__).parent / "results"
FAMILY = "manipulation"
# Debian's photos (shared/DATA.md): not among the generator's backgrounds (pipelines/data/synth/backgrounds.py reads
# scikit-image's), so a scene left out of real_photos.train is nowhere in training.
HOLD_OUT = ("mate:Garden.jpg", "mate:Storm.jpg", "mate:Wood.jpg", "mate:RainDrops.jpg", "wallpaper:Path")


def held_out_params(workspace: Path, hold_out: list[str], out: Path) -> Path:
    """The workspace's params.yaml with ``hold_out`` moved from ``real_photos.train`` to the end of its checks."""
    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    missing = [ref for ref in hold_out if ref not in raw["real_photos"]["train"]]
    if missing:
        raise SystemExit(f"not in real_photos.train: {missing}")
    raw["real_photos"]["train"] = [r for r in raw["real_photos"]["train"] if r not in hold_out]
    raw["real_photos"]["checks"] = list(raw["real_photos"]["checks"]) + list(hold_out)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def scored(bundle: Path, params, photos) -> pd.DataFrame:
    """One row per view and edit: the manipulation score and whether the one decision rule flagged it."""
    from pipelines.release.real_photos import measure
    from pipelines.serve.models import ReviewerModels

    models = ReviewerModels.as_served({FAMILY: str(bundle)}, params)
    metrics, frame = measure({FAMILY: models}, params, photos)
    frame = frame[frame["check"] == FAMILY].copy()
    frame.attrs["threshold"] = metrics[FAMILY]["threshold"]
    return frame


def figures(frame: pd.DataFrame, refs: list[str]) -> dict:
    from pipelines.release.real_photos import _auc     # the real-photo check's own AUC

    part = frame[frame["photo"].isin(refs)]
    unedited, edits = part[part["kind"] == "none"], part[part["kind"] != "none"]
    return {"photos": len(refs), "unedited_views": len(unedited), "edits": len(edits),
            "false_alarm_rate": round(float(unedited["flagged"].mean()), 4),
            "edit_recall": round(float(edits["flagged"].mean()), 4) if len(edits) else None,
            "median_score_unedited": round(float(unedited["score"].median()), 4),
            "roc_auc": _auc(edits["score"], unedited["score"]),
            "median_score_unedited_by_photo": {ref: round(float(g["score"].median()), 4)
                                               for ref, g in unedited.groupby("photo", sort=False)}}


def report(frame: pd.DataFrame, hold_out: list[str], checks: list[str]) -> dict:
    return {"threshold": frame.attrs["threshold"],
            "held_out_scenes": figures(frame, hold_out), "check_photos": figures(frame, checks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--hold-out", nargs="+", default=list(HOLD_OUT))
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/family_variants/manipulation-scene-holdout"))
    ap.add_argument("--out", type=Path, default=RESULTS / "manipulation_scene_holdout.json")
    args = ap.parse_args()
    out = args.out.resolve()
    workspace = args.workspace.resolve()
    os.chdir(workspace)                      # relative paths (feature cache) resolve in the workspace, as in dvc repro

    from pipelines.params import load_params
    from pipelines.release.export import export_bundle
    from pipelines.release.real_photos import photo_set
    from pipelines.train import families

    with tempfile.TemporaryDirectory() as tmp:   # the scratch copy keeps its own params.yaml; nothing left behind
        base = held_out_params(workspace, args.hold_out, Path(tmp) / "params.yaml")
        params = load_params(base)
        scratch_project(workspace, args.scratch, FAMILY, {}, None, base)
    checks = [r for r in params.real_photos.checks if r not in args.hold_out]
    photos = photo_set(params)               # the check photos and the held-out scenes: the same views for both models
    result = {"command": "python benchmarks/manipulation_scene_holdout.py <demo workspace> --hold-out "
                         + " ".join(args.hold_out),
              "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "workspace_revision": _revision(workspace), "seed": params.seed,
              "hold_out": args.hold_out, "checks": checks,
              "training_scenes_left": len(params.real_photos.train)}

    print("scoring the workspace's candidate (trained with the held-out scenes)", flush=True)
    result["trained_with_them"] = report(scored(workspace / "models/reviewer/bundles" / FAMILY, params, photos),
                                         args.hold_out, checks)
    print(json.dumps(result["trained_with_them"], indent=1), flush=True)

    print(f"retraining {FAMILY} without them in {args.scratch}", flush=True)
    started = time.perf_counter()
    record = families.train(FAMILY, args.scratch, params)
    metrics = families.evaluate(FAMILY, args.scratch, params)
    bundle = args.scratch / "models/reviewer/bundles" / FAMILY
    export_bundle(FAMILY, args.scratch, params, bundle, int8=False)
    result["trained_without_them"] = {
        **report(scored(bundle, params, photos), args.hold_out, checks),
        "train_seconds": record.get("seconds"), "train_and_evaluate_seconds": round(time.perf_counter() - started, 1),
        "summary": families.get(FAMILY).summary(metrics["test"])}
    print(json.dumps(result["trained_without_them"], indent=1), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
