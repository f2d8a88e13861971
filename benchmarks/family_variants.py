"""One family's candidate settings, judged as the project judges model work: by the whole reviewer.

Usage, after a default-size `make demo` (its workspace holds the versioned data, the gallery, the trained
candidates and the trunk-feature cache):

    .venv/bin/python benchmarks/family_variants.py /tmp/demo manipulation \\
        --variant crop0.75 train_crop=0.75 --variant whole train_crop=1.0 balanced=true [--seeds 7 8 9]

Each variant overrides keys of ``train.<family>`` in the workspace's params.yaml (``key=value``, YAML values)
and optionally the seed. In a scratch project that links the workspace's data, gallery, feature cache and
the other families' trained candidates, it trains the family (``pipelines.train.families.train``), evaluates
it (thresholds from validation, figures on the frozen test split), then runs the whole-reviewer stage
(:func:`pipelines.release.reviewer.evaluate_reviewer`: every candidate through the one decision rule on
validation, test and the live mix). It keeps the family's own test figures and the reviewer's: clean
auto-pass per split, the live-mix auto-pass, every photo recall, and what stops clean photos.
With ``--section defects`` (family ``detector``) the variants override ``train.defects`` instead and only the
detector's sticker/dirt net is retrained (:func:`pipelines.train.families.detector.train_defects`): the YOLO
weights are the workspace's, copied. With ``--baseline`` the first row is the workspace's own candidate, read from its metrics/<family>.json and
metrics/reviewer.json (not retrained: the figures the variants are compared with). With ``--reuse`` a variant
whose scratch copy (``--scratch``/<family>-<name>-<seed>) already holds its trained model is not retrained: the copy
is made afresh from the params given, the model moved into it, and it is evaluated and reviewed again (after a
change to evaluation, calibration or recall targets).
With ``--real-photos`` each row also carries the real-photo checks (pipelines.release.real_photos) scored on its
bundles. A ``sku`` variant that sets ``gallery_per_sku`` gets a copy of the gallery of its own, topped up by
``reviewops gallery seed``'s code (with ``--reuse``: the same model against a larger gallery).
Writes benchmarks/results/<family>_variants.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).parent / "results"
LINKED = ("data", ".cache", "gallery")      # read-only inputs every variant shares
METRICS = Path("metrics")
MODELS = Path("models")
VARIANT_RECORD = "variant_train.json"   # what families.train returned, where the family writes no train.json itself


def numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics dict, as dotted keys."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def reviewer_view(metrics: dict) -> dict:
    """What the whole reviewer says, per split: clean auto-pass, auto-pass, photo recall, clean flagged by."""
    out = {"live_mix_auto_pass": metrics.get("live_mix_auto_pass")}
    for split in ("val", "test", "live_mix"):
        m = metrics.get(split)
        if m:
            out[split] = {k: m[k] for k in ("clean_auto_pass", "auto_pass", "clean", "n", "photo_recall",
                                             "clean_flagged_by", "generated_outside_catalogue") if k in m}
    return out


def scratch_project(workspace: Path, scratch: Path, family: str, overrides: dict, seed: int | None,
                    base_params: Path | None = None, section: str | None = None, family_only: bool = False) -> dict:
    """A project in ``scratch`` whose params are the workspace's with the variant's; returns the raw params.
    ``family_only``: the other families may be missing from the workspace (none is linked then)."""
    from pipelines.train import families

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for link in LINKED:
        if link == "gallery" and own_gallery(family, overrides):   # topped up by enrol_gallery
            shutil.copytree(workspace / link, scratch / link)
        else:
            os.symlink(workspace / link, scratch / link)
    (scratch / MODELS).mkdir()
    (scratch / METRICS).mkdir()
    for other in families.FAMILIES:                 # the other candidates as trained in the workspace
        if other != family and not (family_only and not (workspace / MODELS / other).exists()):
            os.symlink(workspace / MODELS / other, scratch / MODELS / other)
            shutil.copy(workspace / METRICS / f"{other}.json", scratch / METRICS / f"{other}.json")
    raw = yaml.safe_load((base_params or workspace / "params.yaml").read_text())
    if section == "defects":                        # the defects net alone: the workspace's YOLO weights
        shutil.copytree(workspace / MODELS / family, scratch / MODELS / family,
                        ignore=shutil.ignore_patterns("defects.pt", "runs"))
    raw["train"][section or family].update(overrides)
    if seed is not None:
        raw["seed"] = seed
    (scratch / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


def run_variant(workspace: Path, scratch: Path, family: str, overrides: dict, seed: int | None,
                base_params: Path | None = None, section: str | None = None, reuse: bool = False,
                family_only: bool = False, real_photos: bool = False) -> dict:
    from pipelines.params import load_params
    from pipelines.release.reviewer import evaluate_reviewer
    from pipelines.train import families

    # the training record: the family's train.json, or (prohibited writes one per category) the one written below
    record_file = next((f for f in (scratch / MODELS / family / n for n in ("train.json", VARIANT_RECORD)) if f.exists()),
                       scratch / MODELS / family / VARIANT_RECORD)
    reused = reuse and section is None and record_file.exists()
    kept = scratch.parent / f".{scratch.name}.model"
    if reused:                                      # the model an earlier run trained, in a fresh scratch copy
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(scratch / MODELS / family, kept)
    raw = scratch_project(workspace, scratch, family, overrides, seed, base_params, section, family_only)
    if reused:
        shutil.move(kept, scratch / MODELS / family)
    params = load_params(scratch / "params.yaml")
    enrolled = enrol_gallery(scratch, params) if own_gallery(family, overrides) else None
    started = time.perf_counter()
    if reused:
        record = json.loads(record_file.read_text())
    elif section == "defects":
        from pipelines.train.families.detector import train_defects

        record = train_defects(scratch, params)
    else:
        record = families.train(family, scratch, params)
        if not (scratch / MODELS / family / "train.json").exists():
            (scratch / MODELS / family / VARIANT_RECORD).write_text(json.dumps(record, default=str))
    metrics = families.evaluate(family, scratch, params)
    trained = time.perf_counter() - started
    reviewer = None if family_only else evaluate_reviewer(scratch, params)
    real = None
    if real_photos and not family_only:           # the real-photo checks on the bundles the reviewer stage exported
        from pipelines.release.real_photos import evaluate_real_photos

        real = real_view(evaluate_real_photos(scratch, params))
    gate, auto_pass = families.get(family).gate_values(metrics["test"])
    return {"overrides": overrides, "seed": raw["seed"], "train_seconds": record.get("seconds"),
            **({"reused": "trained by an earlier run in the scratch copy; evaluated and reviewed again"} if reused else {}),
            **({"gallery": enrolled} if enrolled else {}),
            "train_and_evaluate_seconds": round(trained, 1),
            "reviewer_seconds": round(time.perf_counter() - started - trained, 1),
            "thresholds": metrics.get("thresholds"), "gate_values": gate, "family_auto_pass": auto_pass,
            "summary": families.get(family).summary(metrics["test"]),
            "test": numbers(metrics["test"]), "reviewer": None if reviewer is None else reviewer_view(reviewer),
            **({"real_photos": real} if real_photos else {})}


def own_gallery(family: str, overrides: dict) -> bool:
    """Whether the variant gets a gallery of its own: a ``sku`` variant that sets ``gallery_per_sku`` (any other
    setting, ``gallery_blur_cutoff`` included, is read against the workspace's gallery as it is)."""
    return family == "sku" and "gallery_per_sku" in overrides


def enrol_gallery(scratch: Path, params) -> dict:
    """The scratch copy of the gallery topped up to the variant's ``gallery_per_sku`` by ``reviewops gallery
    seed``'s own code (no push: the copy is the variant's alone); what it holds then. Fewer photos per SKU than
    the workspace's gallery holds is refused: ``seed`` only adds."""
    from pipelines.data.gallery import read_gallery, seed

    before = read_gallery(scratch)
    most = int(before["sku_id"].value_counts().max())
    if most > params.train.sku.gallery_per_sku:
        raise SystemExit(f"gallery_per_sku={params.train.sku.gallery_per_sku} is below the workspace gallery's "
                         f"{most} photos per SKU: seed only adds photos")
    seed(scratch, params, push=False)
    after = read_gallery(scratch)
    return {"photos_before": len(before), "photos": len(after), "skus": int(after["sku_id"].nunique()),
            "per_sku_min": int(after["sku_id"].value_counts().min()),
            "per_sku_max": int(after["sku_id"].value_counts().max())}


def real_view(metrics: dict) -> dict:
    """The real-photo checks' headline figures (metrics/real_photos.json)."""
    blur, manipulation = metrics.get("blur", {}), metrics.get("manipulation", {})
    return {"blur_pooled_spearman": blur.get("pooled_spearman"), "blur_sharp_flagged": blur.get("sharp_flagged"),
            "manipulation_false_alarm_rate": manipulation.get("false_alarm_rate"),
            "manipulation_edit_recall": manipulation.get("edit_recall"),
            "manipulation_median_score_unedited": manipulation.get("median_score_unedited"),
            "manipulation_roc_auc": manipulation.get("roc_auc"),
            "blur_laplacian_pooled_spearman": blur.get("gaussian", {}).get("laplacian_baseline", {}).get("pooled_spearman"),
            "sku_unknown_share": metrics.get("sku", {}).get("unknown_sku_share")}


def baseline_row(workspace: Path, family: str, family_only: bool = False, real_photos: bool = False) -> dict:
    """The workspace's own candidate as a row like :func:`run_variant`'s, from its metrics files (no training)."""
    from pipelines.train import families

    metrics = json.loads((workspace / METRICS / f"{family}.json").read_text())
    reviewer = None if family_only else json.loads((workspace / METRICS / "reviewer.json").read_text())
    gate, auto_pass = families.get(family).gate_values(metrics["test"])
    return {"overrides": {}, "seed": yaml.safe_load((workspace / "params.yaml").read_text()).get("seed"),
            "source": f"the workspace's metrics/{family}.json and metrics/reviewer.json",
            "train_seconds": metrics.get("train_seconds"), "thresholds": metrics.get("thresholds"),
            "gate_values": gate, "family_auto_pass": auto_pass,
            "summary": families.get(family).summary(metrics["test"]),
            "test": numbers(metrics["test"]), "reviewer": None if reviewer is None else reviewer_view(reviewer),
            **({"real_photos": real_view(json.loads((workspace / METRICS / "real_photos.json").read_text()))}
               if real_photos else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("family")
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"))
    ap.add_argument("--seeds", nargs="*", type=int, default=[None])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/family_variants"))
    ap.add_argument("--params", type=Path, default=None,
                    help="the params.yaml the variants override (default: the workspace's; give this checkout's when "
                         "the workspace was made by an older revision whose params the code no longer accepts)")
    ap.add_argument("--section", choices=["defects"], default=None,
                    help="defects (family detector): override train.defects and retrain only the sticker/dirt net")
    ap.add_argument("--baseline", action="store_true",
                    help="first row: the workspace's own candidate from its metrics files (not retrained)")
    ap.add_argument("--reuse", action="store_true",
                    help="a variant whose scratch copy already holds a trained model is not retrained: evaluated and "
                         "reviewed again under the params given (not with --section)")
    ap.add_argument("--family-only", action="store_true",
                    help="the family's own figures only, for a workspace whose other families are not trained: the "
                         "whole reviewer is not run (its rows say reviewer: null)")
    ap.add_argument("--real-photos", action="store_true",
                    help="also score the real-photo checks (pipelines.release.real_photos) on each variant's bundles; "
                         "the baseline row reads the workspace's metrics/real_photos.json")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<family>_variants.json")
    args = ap.parse_args()
    if args.section and args.family != "detector":
        ap.error("--section defects needs the family detector")
    out = (args.out or RESULTS / f"{args.section or args.family}_variants.json").resolve()   # before the chdir below
    workspace = args.workspace.resolve()
    base_params = args.params.resolve() if args.params else None     # relative to where it was started
    os.chdir(workspace)                      # relative paths (feature cache) resolve in the workspace, as in dvc repro
    results = [{"variant": "baseline", **baseline_row(workspace, args.family, args.family_only,
                                                                    args.real_photos)}] if args.baseline else []
    command = (f"python benchmarks/family_variants.py <demo workspace> {args.family} "
               + (f"--params {args.params} " if args.params else "")
               + (f"--section {args.section} " if args.section else "") + ("--baseline " if args.baseline else "")
               + ("--reuse " if args.reuse else "") + ("--family-only " if args.family_only else "")
               + ("--real-photos " if args.real_photos else "")
               + " ".join(f"--variant {' '.join(v)}" for v in args.variant)
               + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [None] else ""))
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:                     # after every row: a long run that stops keeps what it measured
        out.write_text(json.dumps({
            "command": command, "date": datetime.date.today().isoformat(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "workspace_revision": _revision(workspace), "results": results}, indent=1) + "\n")
    for name, *pairs in args.variant:
        overrides = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}
        for seed in args.seeds:
            row = run_variant(workspace, args.scratch / f"{args.family}-{name}-{seed}", args.family, overrides, seed,
                              base_params, args.section, args.reuse, args.family_only, args.real_photos)
            results.append({"variant": name, **row})
            write()
            test = (row["reviewer"] or {}).get("test", {})
            print(json.dumps({"variant": name, "seed": row["seed"], "summary": row["summary"],
                              "reviewer_clean_auto_pass_test": test.get("clean_auto_pass"),
                              "live_mix_auto_pass": (row["reviewer"] or {}).get("live_mix_auto_pass")}), flush=True)
    write()
    print(f"wrote {out}")


def _revision(workspace: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=workspace, capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
