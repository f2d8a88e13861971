"""How often the drift monitor raises a false alarm, and how often it catches a real shift.

    .venv/bin/python benchmarks/drift_false_alarms.py --repo /path/to/demo/project [--bundles DIR]

The reference is what `reviewops reference` stores: the production models' outputs on the
project's validation split. Live traffic is fresh generated photos (seeds not used by the data)
answered by the same models through the service's code path (``pipelines.train.review.records``).
Each window is ``--window-rows`` photos, disjoint from every other window:

* ``--windows`` unshifted windows (the generator's default distribution): a window that raises
  the alarm is a false alarm;
* shifted windows for each shift of ``SHIFTS`` (more blur, new SKUs, both): a window that raises
  the alarm is a detection.

Every window goes through ``monitoring.drift.compare`` (the Evidently report and verdict that
`reviewops drift` uses), with params.yaml's ``monitoring`` settings. The models' outputs are cached
under ``--cache`` so a re-run only re-compares. Results: benchmarks/results/drift_false_alarms.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHIFTS = {"blur+new_skus": "blur_rate=0.6,new_sku_rate=0.3", "blur": "blur_rate=0.6", "new_skus": "new_sku_rate=0.3"}
SEEDS = {"unshifted": 9001, "blur+new_skus": 9002, "blur": 9003, "new_skus": 9004}


def outputs(name: str, photos: pd.DataFrame, models, versions, cache: Path) -> pd.DataFrame:
    """The drift features of the reviewer's answers to ``photos`` (cached)."""
    from monitoring.reference import features
    from pipelines.params import load_params
    from pipelines.train.review import records as review_records

    path = cache / f"{name}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    start = time.perf_counter()
    records = review_records(models, versions, photos, load_params(), progress=True)
    frame = features(pd.DataFrame.from_records(records))
    frame.to_parquet(path, index=False)
    print(f"{name}: {len(frame)} answers in {time.perf_counter() - start:.0f} s", flush=True)
    return frame


def generated(name: str, n: int, shift: str | None, cache: Path, params) -> pd.DataFrame:
    from pipelines.data.generate import generate_batch, parse_shift
    from pipelines.data.manifest import read_manifest

    batch = cache / "photos" / name
    if not batch.exists():
        generate_batch(cache / "photos", name, n, SEEDS[name], params, parse_shift(shift), progress=True)
    df = read_manifest(batch)
    df["path"] = [str(batch / rel) for rel in df["image"]]
    return df


def windows(frame: pd.DataFrame, rows: int, count: int) -> list[pd.DataFrame]:
    return [frame.iloc[i * rows:(i + 1) * rows].reset_index(drop=True) for i in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True, help="a project with trained models and versioned data")
    ap.add_argument("--bundles", type=Path, default=None, help="directory of <family>/ ONNX bundles "
                    "(default: the repo's production models in its BentoML store)")
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--shifted-windows", type=int, default=20)
    ap.add_argument("--window-rows", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=Path(".cache/drift_benchmark"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "drift_false_alarms.json")
    args = ap.parse_args()

    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.params import load_params
    from pipelines.serve.models import ReviewerModels

    from monitoring.drift import compare

    repo = args.repo.resolve()
    params = load_params(repo / "params.yaml")
    if args.bundles:
        bundles = {p.name: p for p in sorted(args.bundles.iterdir()) if (p / "meta.json").exists()}
        versions = {f: f"bundle:{f}" for f in bundles}
    else:
        from pipelines.release import registry

        registry.use_store(repo)
        versions, bundles = registry.production(), registry.production_bundles()
    args.cache.mkdir(parents=True, exist_ok=True)
    models = ReviewerModels.as_served(bundles, params)
    reference = outputs("reference", split_frame(versioned_manifest(repo), "val"), models, versions, args.cache)
    result = {"reference_rows": len(reference), "window_rows": args.window_rows, "families": sorted(bundles),
              "columns": {c: v.model_dump() for c, v in params.monitoring.columns.items()},
              "false_alarm_budget": params.monitoring.false_alarm_budget, "shifts": SHIFTS,
              "machine": f"{platform.machine()}, {platform.python_version()}", "runs": {}}
    plan = {"unshifted": (None, args.windows), **{k: (v, args.shifted_windows) for k, v in SHIFTS.items()}}
    for name, (shift, count) in plan.items():
        photos = generated(name, count * args.window_rows, shift, args.cache, params)
        live = outputs(name, photos, models, versions, args.cache)
        alarms, watch, per_column = 0, 0, {}
        scores = []
        start = time.perf_counter()
        for w in windows(live, args.window_rows, count):
            found = compare(reference, w, params)
            alarms += found.drifted
            watch += bool(found.watch_drifted)
            for c in found.columns:
                per_column[c.column] = per_column.get(c.column, 0) + int(c.drifted)
            scores.append({c.column: c.score for c in found.columns if c.trigger})
        result["runs"][name] = {
            "shift": shift, "windows": count, "alarms": alarms, "alarm_rate": round(alarms / count, 4),
            "windows_with_a_watch_column_drifted": watch, "drifted_windows_per_column": per_column,
            "median_trigger_p_values": {c: float(np.median([s[c] for s in scores if s.get(c) is not None]))
                                        for c in scores[0]},
            "live_means": {c: round(float(live[c].mean()), 4) for c in ("blur_score", "sku_similarity")},
            "compare_seconds_per_window": round((time.perf_counter() - start) / count, 2)}
        print(name, json.dumps(result["runs"][name]), flush=True)
    result["reference_means"] = {c: round(float(reference[c].mean()), 4) for c in ("blur_score", "sku_similarity")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
