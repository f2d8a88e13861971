"""Two runs' ``metrics/<family>.json`` side by side: each family's gated recalls, auto-pass share and thresholds.

    python benchmarks/metrics_side_by_side.py BEFORE_METRICS_DIR AFTER_METRICS_DIR [--out FILE]

Every numeric leaf is compared too: how many are equal, and the largest absolute difference.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipelines.train import families


def leaves(obj, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in leaves(value, f"{prefix}{key}.").items()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix[:-1]: float(obj)}
    return {}


def family_row(before: dict, after: dict, name: str) -> dict:
    (rb, ab), (ra, aa) = (families.get(name).gate_values(m["test"]) for m in (before, after))
    lb, la = leaves(before), leaves(after)
    common = sorted(set(lb) & set(la) - {k for k in lb if "seconds" in k})
    diffs = [abs(lb[k] - la[k]) for k in common if not (math.isnan(lb[k]) and math.isnan(la[k]))]
    return {"recall_before": rb, "recall_after": ra, "auto_pass_before": ab, "auto_pass_after": aa,
            "thresholds_before": before["thresholds"], "thresholds_after": after["thresholds"],
            "numeric_leaves": len(common), "equal_leaves": sum(d == 0 for d in diffs),
            "max_abs_diff": max(diffs, default=0.0),
            "only_before": sorted(set(lb) - set(la)), "only_after": sorted(set(la) - set(lb))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = {"command": f"python benchmarks/metrics_side_by_side.py {args.before} {args.after}", "families": {}}
    for name in families.FAMILIES:
        before, after = (json.loads((d / f"{name}.json").read_text()) for d in (args.before, args.after))
        out["families"][name] = family_row(before, after, name)
    text = json.dumps(out, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
