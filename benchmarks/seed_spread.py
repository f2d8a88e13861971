"""The whole reviewer's figures over training runs with different seeds: their spread, and the gate's verdicts.

Usage, after `dvc repro` in one workspace per seed (the same data, ``seed`` changed in params.yaml; e.g. copies of a
default-size `make demo` workspace):

    .venv/bin/python benchmarks/seed_spread.py /tmp/seed7 /tmp/seed8 /tmp/seed9

or with a seed's figures as benchmarks/family_variants.py recorded them (``--recorded FILE:VARIANT``, repeated).
``WORKSPACE=LABEL`` keys a run by LABEL instead of its seed: two workspaces of one seed side by side (e.g. a
generator setting against the default, ``/tmp/demo-flat=flat /tmp/demo-shaded=shaded``).

For every workspace it reads what the reviewer stage measured (``metrics/reviewer.json``: clean auto-pass per split,
the live mix's auto-pass, every defect's photo recall, the share of clean photos each check flags) and judges each
family's candidate by the gate's own criteria (:func:`pipelines.release.gate.judge`: recall floors, the reviewer's
photo recall floors, the real-photo floors; against an empty registry, so no regression criterion), with the
workspace's params. For each figure: its value per seed, and min, max and mean. Writes
benchmarks/results/seed_spread.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_header import header

RESULTS = Path(__file__).parent / "results"


def figures(root: Path | None = None, doc: dict | None = None) -> dict:
    """The reviewer's headline figures of one workspace (or of a recorded ``metrics/reviewer.json`` ``doc``), flat:
    ``split.figure[.defect]`` -> value."""
    doc = doc if doc is not None else json.loads((root / "metrics" / "reviewer.json").read_text())
    out = {"live_mix.auto_pass": doc["live_mix_auto_pass"]}
    for split in ("val", "test", "live_mix"):
        m = doc[split]
        out[f"{split}.clean_auto_pass"] = m["clean_auto_pass"]
        out.update({f"{split}.photo_recall.{d}": r for d, r in m["photo_recall"].items()})
        out.update({f"{split}.clean_flagged_by.{c}": r for c, r in (m.get("clean_flagged_by") or {}).items()})
    return out


def real_photo_figures(root: Path) -> dict | None:
    """The real-photo stage's headline figures (``metrics/real_photos.json``, as family_variants.py summarises them),
    or None where it did not run."""
    from family_variants import real_view

    path = root / "metrics" / "real_photos.json"
    return real_view(json.loads(path.read_text())) if path.exists() else None


def verdicts(root: Path) -> dict:
    """Each family's gate verdict on a fresh registry, with the criteria it fails."""
    from pipelines.params import load_params
    from pipelines.release.gate import judge
    from pipelines.train.families import FAMILIES

    params = load_params(root / "params.yaml")
    out = {}
    for family in FAMILIES:
        found, _ = judge(family, root, params)
        failed = [f"{c.name}: {c.detail}" for c in found if not c.passed]
        out[family] = {"passes": not failed, "failed": failed}
    return out


def lowest(values: dict, split: str) -> list:
    recalls = {k.split(".", 2)[2]: v for k, v in values.items()
               if k.startswith(f"{split}.photo_recall.") and v is not None}
    worst = min(recalls, key=recalls.get)
    return [worst, recalls[worst]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", nargs="*", metavar="WORKSPACE[=LABEL]")
    ap.add_argument("--recorded", action="append", default=[], metavar="FILE:VARIANT",
                    help="a seed's figures as a benchmarks/family_variants.py result recorded them (the row of that "
                         "variant: the reviewer stage's figures with that family retrained); no gate verdicts")
    ap.add_argument("--out", type=Path, default=RESULTS / "seed_spread.json")
    args = ap.parse_args()

    from pipelines.params import load_params

    runs = {}
    for ref in args.recorded:
        path, _, variant = ref.rpartition(":")
        rows = [r for r in json.loads(Path(path).read_text())["results"] if r["variant"] == variant]
        if len(rows) != 1:
            ap.error(f"{ref}: {len(rows)} rows of variant {variant!r}")
        values = figures(doc=rows[0]["reviewer"])
        runs[str(rows[0]["seed"])] = {"recorded": f"{Path(path).name}:{variant}", "figures": values, "gate": None,
                                      "lowest_photo_recall": {s: lowest(values, s) for s in ("test", "live_mix")}}
    for ws in args.workspaces:
        path, _, label = ws.partition("=")
        root = Path(path).resolve()
        params = load_params(root / "params.yaml")
        seed = params.seed
        key = label or str(seed)
        if key in runs:
            ap.error(f"two runs keyed {key!r}: label them WORKSPACE=LABEL")
        values = figures(root)
        runs[key] = {"workspace": str(root), "seed": seed, "figures": values, "gate": verdicts(root),
                     "lowest_photo_recall": {s: lowest(values, s) for s in ("test", "live_mix")},
                     "real_photos": real_photo_figures(root), "generator": params.generator.model_dump()}
        r = runs[key]
        print(f"{key} (seed {seed}): clean auto-pass test {values['test.clean_auto_pass']:.3f}, live mix auto-pass "
              f"{values['live_mix.auto_pass']:.3f}, lowest test photo recall {r['lowest_photo_recall']['test']}, "
              f"gate refuses {[f for f, v in r['gate'].items() if not v['passes']] or 'nothing'}", flush=True)
    keys = sorted(set().union(*(r["figures"] for r in runs.values())))
    spread = {}
    for k in keys:
        vals = [r["figures"].get(k) for r in runs.values()]
        got = [v for v in vals if v is not None]
        spread[k] = {"per_seed": vals, **({"min": round(min(got), 4), "max": round(max(got), 4),
                                           "mean": round(sum(got) / len(got), 4)} if got else {})}
    command = "python benchmarks/seed_spread.py " + " ".join(
        [f"--recorded {r['recorded']}" for r in runs.values() if "recorded" in r]
        + [f"<workspace seed {r['seed']}>" + (f"={s}" if s != str(r["seed"]) else "")
           for s, r in runs.items() if "recorded" not in r])
    doc = {**header(command),
           "seeds": list(runs), "spread": spread,
           "runs": {s: {k: v for k, v in r.items() if k != "figures"} for s, r in runs.items()}}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for k in ("test.clean_auto_pass", "live_mix.auto_pass", "live_mix.clean_auto_pass"):
        print(f"{k}: {spread[k]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
