"""The SKU, blur and manipulation candidates of a workspace on the real-photo checks, beside their generated test figures.

Usage, in a workspace whose sku, blur and manipulation candidates are trained and evaluated (``dvc repro
evaluate@sku evaluate@blur evaluate@manipulation``; a default-size ``make demo`` workspace has them):

    .venv/bin/python benchmarks/real_photos.py /tmp/r20/ws --label with_real_photos

Exports the three candidates as FP32 ONNX bundles (as the reviewer stage does), scores them with
:func:`pipelines.release.real_photos.measure` (the figures of metrics/real_photos.json, on the check photos
of this checkout's params.yaml) and keeps, from the workspace's metrics/, each family's figures on the
frozen test split of generated photos. Merges one row under ``--label`` into
benchmarks/results/real_photos.json with the command that made it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "real_photos.json"


def generated_figures(ws: Path) -> dict:
    """The families' own test figures on generated photos (metrics/<family>.json of the workspace)."""
    read = lambda f: json.loads((ws / "metrics" / f"{f}.json").read_text())
    blur, man, sku = read("blur"), read("manipulation"), read("sku")
    return {"blur": {"recall": blur["test"]["model"]["blurred"]["recall"],
                     "flagged_share": blur["test"]["model"]["blurred"]["flagged_share"],
                     "spearman": blur["test"]["model"]["spearman"],
                     "laplacian_spearman": blur["test"]["laplacian_baseline"]["spearman"]},
            "manipulation": {"recall": man["test"]["manipulated"]["recall"],
                             "flagged_share": man["test"]["manipulated"]["flagged_share"],
                             "precision": man["test"]["manipulated"]["precision"],
                             "recall_by_type": {k: v["recall"] for k, v in man["test"]["recall_by_type"].items()}},
            "sku": {k: sku["test"].get(k) for k in ("seen_top1", "genuine_false_alarm_rate", "outside_catalogue_recall")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    ws = args.workspace.resolve()

    from pipelines.params import load_params
    from pipelines.release.export import export_bundle
    from pipelines.release.real_photos import FAMILIES, measure
    from pipelines.serve.models import ReviewerModels

    here = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    ws_params = load_params(ws / "params.yaml") if "real_photos:" in (ws / "params.yaml").read_text() else here
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {}
        for family in FAMILIES:
            export_bundle(family, ws, ws_params, Path(tmp) / family, int8=False)
            bundles[family] = str(Path(tmp) / family)
        metrics, _ = measure(ReviewerModels.as_served(bundles, here), here)
    train = {f: json.loads((ws / "models" / f / "train.json").read_text()).get("real_photo_samples")
             for f in ("blur", "manipulation")}
    row = {"real_photos": metrics, "generated_test": generated_figures(ws), "real_photo_training_samples": train,
           "seconds": round(time.perf_counter() - started, 1)}
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc.setdefault("runs", {})[args.label] = row
    doc["command"] = "python benchmarks/real_photos.py WORKSPACE --label LABEL"
    doc.setdefault("commands", {})[args.label] = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    doc["machine"] = f"{platform.machine()}, {platform.python_version()}"
    doc["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    from pipelines.release.real_photos import summary
    print(summary(metrics))
    print(json.dumps(row["generated_test"], indent=1))


if __name__ == "__main__":
    main()
