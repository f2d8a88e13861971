"""The SKU alarm on products outside the catalogue: the frozen test split's few photos of them against the gate's
generated ones (``gate.outside_catalogue_photos``, :func:`pipelines.train.families.sku.generated_outside`), and
what the gate says of the family's first run judged on each. Read-only but for the generated photos it renders
into the workspace's ``.reviewops/enriched`` (as ``reviewops evaluate sku`` does).

Usage, after a default-size demo (its trained embedding and metrics/sku.json thresholds):

    .venv/bin/python benchmarks/sku_outside_generated.py /tmp/demo_seed7 \\
        --out benchmarks/results/sku_outside_generated.json

Per set (the calibration photos, validation's and the training split's; the test split's; the generated ones):
the photos, the share the alarm sends to a person, per SKU, and the photos it missed with their similarity and
margin. Then the gate's criteria with no production (a first run) on the test split's figure alone and on the
pooled one, which is what ``gate_values`` judges.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from results_header import header
from sku_genuine_alarms import workspace_params
from sku_wrong_claims import scored


def _set(frame, alarm: np.ndarray) -> dict:
    f = frame.assign(alarm=alarm)
    return {"photos": int(len(f)), "recall": round(float(alarm.mean()), 4) if len(f) else None,
            "per_sku": {k: {"photos": int(len(g)), "recall": round(float(g["alarm"].mean()), 4)}
                        for k, g in f.groupby("sku_id")},
            "missed": [{"sku_id": r.sku_id, "listed_as": r.claimed, "similarity": round(float(r.similarity), 4),
                        "margin": round(float(r.margin), 4)} for r in f[~f["alarm"]].itertuples()]}


def measure(workspace: Path, scratch: Path) -> dict:
    from pipelines.release import gate
    from pipelines.train.families import sku

    params = workspace_params(workspace, scratch)
    metrics = json.loads((workspace / "metrics" / "sku.json").read_text())
    thresholds = metrics["thresholds"]
    cal, test, known, arch, gallery = scored(workspace, params)
    net, _ = sku.load_model(workspace)
    generated = sku.generated_outside(workspace, params, net, arch, gallery)
    test_alarm = sku.alarms(test, thresholds, known)
    outside = test["outside"].to_numpy()
    sets = {"calibration": _set(cal[cal["outside"]], sku.alarms(cal[cal["outside"]], thresholds, known)),
            "test": _set(test[outside], test_alarm[outside]),
            "generated": _set(generated, sku.alarms(generated, thresholds, known))}
    figures = {**sku.open_set_metrics(test, test_alarm),
               **sku.pooled_outside(test, test_alarm, generated, thresholds, known)}
    alone = {k: v for k, v in figures.items() if k != "outside_catalogue_recall_pooled"}

    def judged(test_metrics: dict) -> list[dict]:
        return [{"name": c.name, "value": c.value, "limit": c.limit, "passed": c.passed}
                for c in gate.criteria("sku", test_metrics, None, params)]
    return {"seed": params.seed, "thresholds": thresholds, "generated_photos_asked": params.gate.outside_catalogue_photos,
            "outside_catalogue": sets,
            "pooled": {k: figures[k] for k in ("outside_catalogue_recall_pooled", "outside_catalogue_photos_pooled")},
            "gate_first_run": {"test_split_alone": judged(alone), "pooled": judged(figures)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sku_outside_generated.json")
    args = ap.parse_args()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        row = measure(args.workspace.resolve(), Path(scratch))
    out.write_text(json.dumps({**header("python benchmarks/sku_outside_generated.py <workspace>"),
                               "note": args.note, **row}, indent=1) + "\n")
    print(json.dumps({k: row[k] for k in ("pooled", "gate_first_run")}, indent=1))


if __name__ == "__main__":
    main()
