"""Why the SKU alarm stops genuine claims: which rule fires, on which SKUs, and which outside-catalogue photos set
the similarity threshold. Read-only: the workspaces' trained embeddings and thresholds (metrics/sku.json).

Usage, after default-size demos (or their retrained copies):

    .venv/bin/python benchmarks/sku_genuine_alarms.py /tmp/demo_seed7 /tmp/demo_seed8 \\
        --out benchmarks/results/sku_genuine_alarms.json

For each workspace and split (validation, test): the share of genuine claims the alarm flags, for SKUs the embedding
trained on and for the held-out (enrolled, never trained) ones, split by reason (``sku_mismatch``: another SKU leads
by the margin; ``unknown_sku``: the claimed SKU's similarity at or under the threshold); outside-catalogue recall;
the ROC AUC of the claimed SKU's similarity between genuine claims and outside-catalogue photos; the genuine claims
flagged by what else the photo shows (``genuine_by_photo``: no other defect, as the whole reviewer's ``clean``, or
blurred, cut by the frame, off-centre, edited, dirty, a sticker missing, a prohibited item; the manifest's labels,
:func:`pipelines.release.reviewer.truth`); and the outside-catalogue calibration photos most similar to the SKU they
are listed under (the ones that set the threshold at ``recall_targets.unknown_sku``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from results_header import header
from sku_wrong_claims import scored


def _share(flag: np.ndarray, mask: np.ndarray) -> float | None:
    return round(float(flag[mask].mean()), 4) if mask.any() else None


def workspace_params(workspace: Path, scratch: Path):
    """The workspace's params; a section this checkout added since it was made (train.camera: training only) is
    taken from this checkout's params.yaml."""
    from pipelines.params import load_params

    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    ours = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw["train"].setdefault("camera", ours["train"]["camera"])
    path = scratch / f"params-{workspace.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def photo_labels(workspace: Path, params, listing_ids: pd.Series) -> pd.DataFrame:
    """What else each photo of ``listing_ids`` shows, by the versioned manifests' labels: the whole reviewer's
    defect columns (:func:`pipelines.release.reviewer.truth`) and ``cut_by_frame`` (the product past the border,
    a kind of ``off_centre``), in the order of ``listing_ids``."""
    from pipelines.data.manifest import read_manifest
    from pipelines.release.reviewer import truth

    manifests = [read_manifest(d) for d in sorted((workspace / "data" / "batches").iterdir()) if d.is_dir()]
    photos = pd.concat(manifests, ignore_index=True).drop_duplicates("listing_id").set_index("listing_id")
    photos = photos.loc[listing_ids.to_numpy()]
    t = truth(photos, set(), list(params.prohibited.categories))     # the claim's own columns are not used here
    return t.assign(cut_by_frame=photos["cut_by_frame"].astype(bool).to_numpy())


BY_PHOTO = ("blur", "cut_by_frame", "off_centre", "manipulation", "dirt", "sticker_missing", "prohibited")


def measure(workspace: Path, closest: int, scratch: Path) -> dict:
    from pipelines.serve.decision import sku_alarm

    params = workspace_params(workspace, scratch)
    thresholds = json.loads((workspace / "metrics" / "sku.json").read_text())["thresholds"]
    cal, test, known, arch, _ = scored(workspace, params)
    out = {"seed": params.seed, "thresholds": thresholds, "holdout_skus": sorted(arch["holdout_skus"])}
    for name, s in (("val", cal[cal["split"] == "val"]), ("test", test)):
        reason = np.array([sku_alarm(c, k, thresholds, known) or "" for c, k in zip(s["candidates"], s["claimed"])])
        genuine, trained, outside = (s[k].to_numpy() for k in ("genuine", "trained", "outside"))
        row = {}
        for group, mask in (("trained", genuine & trained), ("untrained", genuine & ~trained)):
            row[f"genuine_{group}"] = {"photos": int(mask.sum()), "flagged": _share(reason != "", mask),
                                       "sku_mismatch": _share(reason == "sku_mismatch", mask),
                                       "unknown_sku": _share(reason == "unknown_sku", mask)}
        row["outside_catalogue"] = {"photos": int(outside.sum()), "recall": _share(reason != "", outside)}
        labels = photo_labels(workspace, params, s["listing_id"])
        other = labels[list(BY_PHOTO)].any(axis=1).to_numpy()
        row["genuine_by_photo"] = {
            kind: {"photos": int((genuine & mask).sum()), "flagged": _share(reason != "", genuine & mask)}
            for kind, mask in (("no_other_defect", ~other), *((k, labels[k].to_numpy()) for k in BY_PHOTO))}
        sim = s["similarity"].to_numpy(dtype=float)
        both = (genuine | outside) & ~np.isnan(sim)
        row["similarity_auc_outside_vs_genuine"] = round(float(roc_auc_score(outside[both], -sim[both])), 4)
        row["median_similarity"] = {k: round(float(np.nanmedian(sim[m])), 4) for k, m in
                                    (("genuine_trained", genuine & trained), ("genuine_untrained", genuine & ~trained),
                                     ("outside_catalogue", outside))}
        out[name] = row
    hardest = cal[cal["outside"]].sort_values("similarity", ascending=False).head(closest)
    out["closest_outside_catalogue_calibration_photos"] = [
        {"sku_id": r.sku_id, "listed_as": r.claimed, "similarity": round(float(r.similarity), 4),
         "split": r.split} for r in hardest.itertuples()]
    out["outside_catalogue_calibration_photos"] = int(cal["outside"].sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspaces", nargs="+", type=Path)
    ap.add_argument("--closest", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sku_genuine_alarms.json")
    args = ap.parse_args()
    out = args.out.resolve()
    command = ("python benchmarks/sku_genuine_alarms.py " + " ".join(f"<workspace {i + 1}>" for i in range(len(args.workspaces)))
               + f" --closest {args.closest}")
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(w.resolve(), args.closest, Path(scratch)) for w in args.workspaces]
    out.write_text(json.dumps({**header(command), "workspaces": rows}, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
