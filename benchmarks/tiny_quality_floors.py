"""The tiny profile's quality floors, measured: trained models against untrained ones, on the tiny test project.

    .venv/bin/python benchmarks/tiny_quality_floors.py [--seeds 7 8 9] [--scratch /tmp/tiny_floors]

For each training seed (params.yaml ``seed``) it builds the tests' tiny project (tests/conftest.py: the tiny batch,
versioned, gallery seeded, tiny gate), trains and evaluates every family and the whole reviewer as the tests do
(``train_all``), once as configured ("trained") and once with every learning rate at 1e-12 ("untrained": the
ImageNet trunk with random heads, i.e. a model whose output carries nothing it was taught). It records what
tests/models/training_fit.py reads on the training split through the served bundles, and the held-out test
figures beside them (which, on 23 test photos, do not separate the two), and how often output drawn at random
would reach each floor on these photos (``chance``). One more trained run has YOLO train ``--detector-epochs``
(0: none) instead of the tiny profile's 1: whether any tiny setup finds the product, which a clean photo
needs to be auto-passed. Writes benchmarks/results/tiny_quality_floors.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from results_header import header  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "tiny_quality_floors.json"
LEARNING_RATES = ("sku", "blur", "prohibited", "manipulation", "defects")   # train.<key>.lr


def held_out(repo: Path) -> dict:
    """The test-split figures of the families' own metrics the floors are compared with."""
    m = {f: json.loads((repo / "metrics" / f"{f}.json").read_text())["test"]
         for f in ("blur", "detector", "manipulation", "prohibited", "sku")}
    return {"blur_spearman": m["blur"]["model"]["spearman"],
            "sticker_missing_auc": m["detector"]["sticker_missing"]["auc"],
            "dirt_auc": m["detector"]["dirt"]["auc"],
            "manipulation_auc": m["manipulation"]["manipulated"]["auc"],
            "prohibited_auc": {c: v["auc"] for c, v in m["prohibited"]["categories"].items()},
            "sku_seen_top1": m["sku"]["seen_top1"],
            # issue 24 item 6: YOLO from scratch finds no product box on the tiny batch, so no clean photo passes
            "detector_product_found_share": m["detector"]["centring"]["product_found_share"],
            "detector_map50_product": m["detector"]["map50"]["product"],
            "reviewer_clean_auto_pass": json.loads((repo / "metrics" / "reviewer.json").read_text())["test"]["clean_auto_pass"]}


def chance(fit: dict, floors: dict, draws: int = 20000, seed: int = 0) -> dict[str, float]:
    """How often output drawn at random (independent of the photos) reaches each floor, on the photo and positive
    counts of ``fit``: the share of ``draws`` random scorings at or above the floor."""
    import numpy as np
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)

    def auc_at_least(pos: int, n: int, floor: float) -> float:
        ranks = np.apply_along_axis(rankdata, 1, rng.random((draws, n)))[:, :pos]     # the first pos are positives
        auc = (ranks.sum(1) - pos * (pos + 1) / 2) / (pos * (n - pos))
        return float((auc >= floor).mean())

    n = fit["blur_photos"]
    a, b = rng.random((draws, n)), rng.random(n)
    rho = np.array([np.corrcoef(rankdata(row), rankdata(b))[0, 1] for row in a])
    prohibited = 1.0
    for c, pos in fit["prohibited_positives"].items():
        prohibited *= auc_at_least(pos, fit["photos"], floors["prohibited_auc_min"])
    top1 = rng.binomial(fit["sku_photos"], 1.0 / fit["sku_classes"], draws) / fit["sku_photos"]
    return {"blur_spearman": float((rho >= floors["blur_spearman"]).mean()),
            "sticker_missing_auc": auc_at_least(fit["sticker_missing_positives"], fit["sticker_missing_photos"],
                                                floors["sticker_missing_auc"]),
            "dirt_auc": auc_at_least(fit["dirt_positives"], fit["dirt_photos"], floors["dirt_auc"]),
            "manipulation_auc": auc_at_least(fit["manipulation_positives"], fit["photos"], floors["manipulation_auc"]),
            "prohibited_auc_min": prohibited,
            "sku_classifier_top1": float((top1 >= floors["sku_classifier_top1"]).mean())}


def run(base: Path, seed: int, untrained: bool, detector_epochs: int | None = None) -> dict:
    from tests.conftest import make_project, tiny_gate_params, train_all
    from tests.models.training_fit import below_floors, training_fit

    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    repo = make_project(base)
    tiny_gate_params(repo)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["seed"] = seed
    if untrained:
        for key in LEARNING_RATES:
            raw["train"][key]["lr"] = 1e-12
    if detector_epochs:                      # YOLO longer than the tiny profile's 1 epoch (its patience out of the way)
        raw["train"]["profiles"]["tiny"]["detector_epochs"] = detector_epochs
        raw["train"]["detector"].update(epochs=detector_epochs, patience=detector_epochs)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    started = time.perf_counter()
    train_all(repo)
    fit = training_fit(repo)
    return {"train_all_seconds": round(time.perf_counter() - started, 1), "training_split": fit,
            "below_floors": below_floors(fit), "test_split": held_out(repo)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/tiny_floors"))
    ap.add_argument("--detector-epochs", type=int, default=40,
                    help="one more trained run (first seed) with YOLO trained this long: does it find the products?")
    args = ap.parse_args()
    from tests.models.training_fit import FLOORS

    out = {**header("python benchmarks/tiny_quality_floors.py --seeds " + " ".join(map(str, args.seeds))
                  + f" --detector-epochs {args.detector_epochs}"),
           "floors": FLOORS, "runs": {}}
    for seed in args.seeds:
        for untrained in (False, True):
            name = f"{'untrained' if untrained else 'trained'}_seed{seed}"
            out["runs"][name] = run(args.scratch / name, seed, untrained)
            print(name, json.dumps(out["runs"][name]["below_floors"]), flush=True)
    if args.detector_epochs:
        name = f"trained_seed{args.seeds[0]}_detector{args.detector_epochs}"
        out["runs"][name] = run(args.scratch / name, args.seeds[0], False, args.detector_epochs)
        print(name, json.dumps(out["runs"][name]["test_split"]), flush=True)
    for kind in ("trained_seed", "untrained_seed"):
        runs = [r["training_split"] for n, r in out["runs"].items() if n.startswith(kind) and "detector" not in n]
        out[f"{kind.split('_')[0]}_range"] = {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in FLOORS
                                if all(r.get(k) is not None for r in runs)}
    first = next(iter(out["runs"].values()))["training_split"]            # the photos are the same in every run
    out["chance"] = chance(first, FLOORS)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("trained_range", "untrained_range", "chance")}, indent=1))


if __name__ == "__main__":
    main()
