"""Where to cut the frozen trunk for the prohibited-item classifiers, and at which input size:
decided on the validation split only (the frozen test split is not read here).

Usage (in a project with versioned demo data, e.g. after `make demo`):

    .venv/bin/python benchmarks/prohibited_trunk.py --repo . --configs 6:192 5:256 4:256

For each ``split:size``, every category of params.yaml is trained with the family's own code
(`pipelines.train.families.prohibited.train_category`, same seeds, epochs and sampling) in a scratch
directory that shares the repo's versioned data and trunk-feature cache, and scored on validation:
average precision, and the best precision at recall >= 0.95 (what the issue asks of test). Writes
benchmarks/results/prohibited_trunk.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from pipelines.data.dataset import split_frame
from pipelines.train.families import common
from pipelines.train.families.prohibited import _labels, load_combined, probabilities, train_category
from pipelines.params import load_params

OUT = Path(__file__).parent / "results" / "prohibited_trunk.json"


def precision_at_recall(y: np.ndarray, s: np.ndarray, recall: float) -> float:
    p, r, _ = precision_recall_curve(y, s)
    ok = r >= recall
    return float(p[ok].max()) if ok.any() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--configs", nargs="+", default=["6:192", "5:256", "4:256"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    repo = args.repo.resolve()
    base = load_params(repo / "params.yaml")
    results = []
    with tempfile.TemporaryDirectory(prefix="prohibited-trunk-") as tmp:
        work = Path(tmp)
        for name in ("data", ".cache", "params.yaml"):
            (work / name).symlink_to(repo / name)
        val = split_frame(common.load_frame(work), "val")
        for spec in args.configs:
            split, size = (int(v) for v in spec.split(":"))
            train = base.train.model_copy(update={
                "prohibited": base.train.prohibited.model_copy(update={"trunk_split": split, "image_size": size})})
            params = base.model_copy(update={"train": train})
            started = time.perf_counter()
            records = {c: train_category(work, params, c) for c in params.prohibited.categories}
            seconds = time.perf_counter() - started
            model = load_combined(work, params)
            p_val = probabilities(work, params, val, model)
            per = {}
            for j, c in enumerate(model.categories):
                y = _labels(val, c)
                per[c] = {"val_average_precision": round(float(average_precision_score(y, p_val[:, j])), 4),
                          "val_precision_at_recall_0.95": round(precision_at_recall(y, p_val[:, j], 0.95), 4),
                          "val_positives": int(y.sum()), "train_seconds": records[c]["seconds"],
                          "epochs_run": records[c]["epochs_run"]}
            row = {"trunk_split": split, "image_size": size, "train_seconds": round(seconds, 1),
                   "mean_val_average_precision": round(float(np.mean([v["val_average_precision"] for v in per.values()])), 4),
                   "categories_reaching_precision_0.8_at_recall_0.95": int(sum(
                       v["val_precision_at_recall_0.95"] >= 0.8 for v in per.values())),
                   "categories": per}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "categories"}), flush=True)
            _write(args, results)
    print(f"wrote {args.out}")


def _write(args, results: list[dict]) -> None:
    """Written after every configuration: an interrupted run keeps what it measured."""
    out = {"command": f"python benchmarks/prohibited_trunk.py --repo <demo project> --configs {' '.join(args.configs)}",
           "data": "demo batch (6000 photos, seed 7); validation split only", "results": results,
           "date": datetime.date.today().isoformat()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
