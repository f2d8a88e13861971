"""The whole reviewer on the gate's generated outside-catalogue photos, on a finished workspace: what the reviewer
stage now adds to its test figures (``test.generated_outside_catalogue``, :func:`pipelines.release.reviewer.
generated_outside`) for the candidates that workspace's reviewer stage exported, and what it costs.

Usage, after a default-size demo (its ``models/reviewer/bundles``, as served, and its ``metrics/reviewer.json``):

    .venv/bin/python benchmarks/reviewer_outside_generated.py /tmp/demo_seed7 \\
        --out benchmarks/results/reviewer_outside_generated_seed7.json

Read-only but for the generated photos it renders into the workspace's ``.reviewops/enriched`` (once; the SKU
family's evaluation renders the same ones). The seconds are the review's alone, the render excluded (timed after a
first call that renders or finds them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from results_header import header
from sku_genuine_alarms import workspace_params


def measure(workspace: Path, scratch: Path) -> dict:
    from pipelines.release.reviewer import generated_outside, stage_bundles
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.families.sku import generated_outside_photos

    params = workspace_params(workspace, scratch)
    bundles = stage_bundles(workspace)
    models = ReviewerModels.as_served(bundles, params)
    test = json.loads((workspace / "metrics" / "reviewer.json").read_text())["test"]
    photos = len(generated_outside_photos(workspace, params))          # rendered here if not yet
    started = time.perf_counter()
    figures = generated_outside(workspace, params, models, test)
    seconds = time.perf_counter() - started
    return {"families": sorted(bundles), "generated_photos": photos,
            "test_split": {"photos": test["positives"].get("outside_catalogue"),
                           "photo_recall": test["photo_recall"].get("outside_catalogue"),
                           "reason_recall": test["reason_recall"].get("outside_catalogue")},
            "generated_outside_catalogue": figures, "review_seconds": round(seconds, 1),
            "seconds_per_photo": round(seconds / max(photos, 1), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(args.workspace.resolve(), Path(scratch))
    doc = {**header(f"python benchmarks/reviewer_outside_generated.py <workspace> --out {args.out}"), **result}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
