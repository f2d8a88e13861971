"""Joint calibration of the whole reviewer's thresholds, tried on recorded scores: does it hold on test and live traffic?

Usage, after a default-size `make demo` (or any workspace whose reviewer stage has run):

    .venv/bin/python benchmarks/joint_calibration.py /tmp/demo [--confidence 0.7]

The reviewer stage records every photo's raw scores (``models/reviewer/scores.parquet``: validation, the frozen test
split and a live-mix sample). Here every swept check's threshold (blur, sticker_missing, dirt, manipulation, each
prohibited category, the SKU similarity; centring and "no product" held as recorded) is chosen on the VALIDATION
rows by coordinate ascent: from the thresholds the families calibrated alone, repeatedly move the one threshold
whose largest feasible step gains the most clean auto-pass, until none gains. Feasible: for every defect, the
one-sided Clopper-Pearson lower bound (``--confidence``) of its recall reaches its gate floor. Recall is counted
four ways, one mode each:

- ``photo``: a positive sent to a person for any reason (the issue's photo recall);
- ``photo_live_weighted``: the same, each validation positive weighted so that the other defects it carries occur
  at the live mix's rates (params.yaml ``live_mix.rates`` against ``generator``), the bound on Kish's effective n;
- ``photo_single_defect``: photo recall on the positives that carry no other defect;
- ``reason``: a positive flagged by its own check (its right reason; centring and "no product" count for
  off_centre), i.e. each check alone at the floor.

Each mode's thresholds are then applied to test and the live mix (:func:`pipelines.release.operating_point.flags`,
the vectorised decision the operating-point report checks against ``decide()``). Writes
benchmarks/results/joint_calibration.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from results_header import header

RESULTS = Path(__file__).parent / "results"
GROUPS = ("blur", "sticker_missing", "dirt", "off_centre", "prohibited", "manipulation", "wrong_claim")
RATE_OF = {"blur": "blur_rate", "sticker_missing": "sticker_missing_rate", "dirt": "dirt_rate",
           "off_centre": "off_centre_rate", "prohibited": "prohibited_rate", "manipulation": "manipulation_rate",
           "wrong_claim": "claimed_sku_error_rate"}
MODES = ("photo", "photo_live_weighted", "photo_single_defect", "reason")


def group(defect: str) -> str:
    return "prohibited" if defect.startswith("prohibited") else "sku" if defect in ("wrong_claim", "outside_catalogue") \
        else defect


def owners(defect: str) -> list[str]:
    """The swept checks whose flag is the defect's right reason."""
    g = group(defect)
    return [defect] if g == "prohibited" else ["sku"] if g == "sku" else [] if defect == "off_centre" else [defect]


class Problem:
    """The validation rows, each check's threshold grid and its flags on every grid point."""

    def __init__(self, frame: pd.DataFrame, metas: dict, floors: dict, params, confidence: float, mode: str):
        from pipelines.release import operating_point as op

        self.op, self.metas, self.mode, self.confidence = op, metas, mode, confidence
        self.checks = op.checks(frame, metas, floors)
        self.val = frame[frame["split"] == "val"].reset_index(drop=True)
        self.held = op.held(self.val, self.checks)
        self.clean = self.val["truth.clean"].to_numpy(bool)
        self.defects = op.defects_in(self.val, overall=False)
        self.floor = {d: op.floor_of(floors, d) for d in self.defects}
        self.grid = {c.name: sorted({t for t in op.grid(c, self.val, metas, 300) if t is not None} | {c.threshold})
                     for c in self.checks if c.threshold is not None}
        self.checks = [c for c in self.checks if c.name in self.grid]
        self.flags = {c.name: op.flags(c, self.val, metas, self.grid[c.name]) for c in self.checks}
        self.pos = {d: self.val[f"truth.{d}"].to_numpy(bool) for d in self.defects}
        self.weight = {d: self._weights(d, params) for d in self.defects}

    def _weights(self, defect: str, params) -> np.ndarray:
        w = np.ones(len(self.val))
        if self.mode == "photo_single_defect":
            for g in GROUPS:
                if g != group(defect) and not (group(defect) == "sku" and g == "wrong_claim"):
                    w[self.val[f"truth.{g}"].to_numpy(bool)] = 0.0
        elif self.mode == "photo_live_weighted":
            live = params.live_mix.rates
            for g in GROUPS:
                if g == group(defect) or (group(defect) == "sku" and g == "wrong_claim"):
                    continue
                p = getattr(params.generator, RATE_OF[g])
                q = (live.get(RATE_OF[g]) if isinstance(live, dict) else getattr(live, RATE_OF[g], None)) or p
                present = self.val[f"truth.{g}"].to_numpy(bool)
                w *= np.where(present, q / p, (1 - q) / (1 - p))
        return w[self.pos[defect]]

    def manual(self, idx: dict[str, int], skip: str | None = None) -> np.ndarray:
        m = self.held.copy()
        for c in self.checks:
            if c.name != skip:
                m |= self.flags[c.name][idx[c.name]]
        return m

    def feasible(self, idx: dict[str, int]) -> bool:
        from pipelines.train.evaluate import recall_lower_bound

        every = self.manual(idx)
        for d in self.defects:
            if self.mode == "reason":
                caught = self.held.copy() if d == "off_centre" else np.zeros(len(self.val), bool)
                for name in owners(d):
                    if name in idx:
                        caught |= self.flags[name][idx[name]]
            else:
                caught = every
            w, hit = self.weight[d], caught[self.pos[d]]
            if w.sum() <= 0:
                continue
            n_eff = w.sum() ** 2 / (w ** 2).sum()
            share = float((w * hit).sum() / w.sum())
            if share < 1 and recall_lower_bound(share * n_eff, n_eff, self.confidence) < self.floor[d] - 1e-12:
                return False
        return True

    def solve(self) -> dict[str, float]:
        """Coordinate ascent from the recorded thresholds (lowered where they are not feasible)."""
        idx = {c.name: self.grid[c.name].index(c.threshold) for c in self.checks}
        if self.mode == "reason" or not self.feasible(idx):
            # every check at its most cautious end, then each pushed as far as it stays feasible (for ``reason`` the
            # checks are independent: this is each check alone at its floor, and the ascent below finds nothing)
            idx = {c.name: (len(self.grid[c.name]) - 1 if c.sku else 0) for c in self.checks}
            for c in self.checks:
                step = -1 if c.sku else 1
                while 0 <= idx[c.name] + step < len(self.grid[c.name]) and \
                        self.feasible({**idx, c.name: idx[c.name] + step}):
                    idx[c.name] += step
        for _ in range(200):
            best = None
            for c in self.checks:
                name, step = c.name, (-1 if c.sku else 1)        # the SKU alarm: similarity <= t, so "up" is down
                other = self.manual(idx, skip=name)
                now = float((~(other | self.flags[name][idx[name]]))[self.clean].mean())
                j, last = idx[name] + step, idx[name]
                while 0 <= j < len(self.grid[name]):
                    trial = {**idx, name: j}
                    if not self.feasible(trial):
                        break
                    last, j = j, j + step
                if last != idx[name]:
                    gain = float((~(other | self.flags[name][last]))[self.clean].mean()) - now
                    if gain > 1e-12 and (best is None or gain > best[0]):
                        best = (gain, name, last)
            if best is None:
                break
            idx[best[1]] = best[2]
        return {c.name: float(self.grid[c.name][idx[c.name]]) for c in self.checks}


def figures(frame: pd.DataFrame, metas: dict, floors: dict, thresholds: dict[str, float]) -> dict:
    from pipelines.release import operating_point as op

    out = {}
    for split in ("val", "test", "live_mix"):
        part = frame[frame["split"] == split].reset_index(drop=True)
        manual, own = op.redecide(part, metas, floors, thresholds)
        held = op.held(part, op.checks(part, metas, floors))
        clean = part["truth.clean"].to_numpy(bool)
        photo = {d: round(r, 4) for d, r in op.photo_recall(part, manual, overall=False).items()}
        reason = {}
        for d in photo:
            pos = part[f"truth.{d}"].to_numpy(bool)
            right = held.copy() if d == "off_centre" else np.zeros(len(part), bool)
            for name in owners(d):
                if name in own:
                    right |= own[name]
            reason[d] = round(float(right[pos].mean()), 4)
        below = {d: [photo[d], int(part[f"truth.{d}"].sum())] for d in op.below_floor(photo, floors)}
        lowest = min(photo, key=photo.get)
        out[split] = {"clean_auto_pass": round(float((~manual[clean]).mean()), 4),
                      "lowest_photo_recall": [lowest, photo[lowest]],
                      "lowest_reason_recall": sorted(((v, d) for d, v in reason.items()))[0][::-1],
                      "photo_recall_below_floor": below, "photo_recall": photo, "reason_recall": reason}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--confidence", type=float, default=None, help="default: the workspace's recall_targets.confidence")
    ap.add_argument("--out", type=Path, default=RESULTS / "joint_calibration.json")
    args = ap.parse_args()

    from pipelines.params import load_params
    from pipelines.serve.bundle import read_meta

    root = args.workspace.resolve()
    params = load_params(root / "params.yaml")
    confidence = params.recall_targets.confidence if args.confidence is None else args.confidence
    frame = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    bundles = root / "models" / "reviewer" / "bundles"
    metas = {p.name: read_meta(p) for p in sorted(bundles.iterdir()) if p.is_dir()}
    floors = dict(params.gate.recall_floors)
    rows = [{"mode": "families_alone", "thresholds": None, "figures": figures(frame, metas, floors, {})}]
    for mode in MODES:
        thresholds = Problem(frame, metas, floors, params, confidence, mode).solve()
        rows.append({"mode": mode, "thresholds": {k: round(v, 6) for k, v in thresholds.items()},
                     "figures": figures(frame, metas, floors, thresholds)})
    for r in rows:
        f = r["figures"]
        print(f"{r['mode']:>22}: clean auto-pass val {f['val']['clean_auto_pass']:.3f} test {f['test']['clean_auto_pass']:.3f} "
              f"live {f['live_mix']['clean_auto_pass']:.3f}; below floor test {f['test']['photo_recall_below_floor'] or '-'} "
              f"live {f['live_mix']['photo_recall_below_floor'] or '-'}", flush=True)
    doc = {**header(f"python benchmarks/joint_calibration.py <demo workspace> --confidence {confidence}"),
           "confidence": confidence, "floors": floors, "rows": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
