"""Would the SKU embedding, and the sticker and dirt checks, do better on the product cropped by its box? Trained and
measured in a scratch copy. It measured the SKU crop before the family read crops itself
(``train.sku.crop_pad``, now the default); the scratch copy sets it to null, as its photos are crops already.

Usage, after a default-size `make demo` (its workspace: versioned data, gallery, reviewer scores):

    .venv/bin/python benchmarks/product_crop.py /tmp/demo --scratch /tmp/crop [--pad 1.25] [--family sku defects]
    [--reuse [--no-train]]

Every photo of the workspace is replaced, in a scratch project, by a square crop around its product box resized to
the SKU family's input size (``train.sku.image_size``), saved losslessly (PNG: serving would crop the decoded photo
in memory): training photos and the gallery's photos by their labelled box (what annotation gives at training and
enrolment time); validation and test photos by the box the SERVED detector found (the reviewer stage's
``models/reviewer/scores.parquet`` ``product_box``), the whole photo where it found none. The square's side is
``--pad`` times the box's longer side, moved inside the photo (the whole photo when it would not fit); ``--reuse``
keeps a scratch copy an earlier run built.

- ``sku``: the family is trained and evaluated there with the project's own code
  (``pipelines.train.families.train/evaluate("sku")``: the same seed, params and calibration), and its
  metrics/sku.json figures are set beside the workspace's own. Writes benchmarks/results/sku_crop.json.
- ``defects``: the detector family's two-logit defects net (sticker missing, dirt;
  :func:`pipelines.train.families.detector.train_defects`) is trained there, and both nets, the workspace's on the
  whole photos and this one on the crops, are calibrated and measured by the family's own
  ``_check_metrics`` (threshold on validation for ``recall_targets``, figures on test), and each net's false-positive
  rate at matched recall (threshold set on the split itself). YOLO is not retrained; ``--no-train`` scores the net an
  earlier run trained in the scratch copy. Writes benchmarks/results/defects_crop.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from results_header import header

RESULTS = Path(__file__).parent / "results"
KEYS = ("seen_top1", "enrolled_untrained_top1", "wrong_claim_recall", "wrong_claim_recall_colour_variant",
        "wrong_claim_recall_layout_variant", "outside_catalogue_recall", "genuine_false_alarm_rate")


def square(box, pad: float) -> tuple[float, float, float, float] | None:
    """The normalised square around ``box`` (x0, y0, x1, y1), ``pad`` times its longer side, inside [0, 1]."""
    if box is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = pad * max(x1 - x0, y1 - y0)
    if side >= 1.0 or side <= 0:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), 1.0 - side)
    top = min(max(cy - side / 2, 0.0), 1.0 - side)
    return left, top, left + side, top + side


def crop(path: Path, box, pad: float, size: int) -> bytes:
    with Image.open(path) as im:
        im = im.convert("RGB")
        sq = square(box, pad)
        if sq is not None:
            w, h = im.size
            im = im.crop((round(sq[0] * w), round(sq[1] * h), round(sq[2] * w), round(sq[3] * h)))
        im = im.resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()


def labelled_box(boxes) -> list[float] | None:
    for b in boxes if boxes is not None else []:
        if b["label"] == "product":
            return [b["x0"], b["y0"], b["x1"], b["y1"]]
    return None


def build_scratch(ws: Path, scratch: Path, pad: float, size: int) -> dict:
    """The scratch project of cropped photos (see the module's doc); the count of boxes by source."""
    served = pd.read_parquet(ws / "models" / "reviewer" / "scores.parquet")
    served = served[served["split"].isin(["val", "test"])].set_index("listing_id")["product_box"]
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "data" / "batches").mkdir(parents=True)
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["train"]["sku"]["crop_pad"] = None          # the photos are crops already: the family must not crop again
    (scratch / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sources = {"labelled": 0, "served detector": 0, "served detector found none": 0}
    boxes_by_listing = {}
    for pointer in sorted((ws / "data" / "batches").glob("*.dvc")):
        src, dst = pointer.with_suffix(""), scratch / "data" / "batches" / pointer.stem
        shutil.copy2(pointer, dst.with_suffix(".dvc"))
        m = pd.read_parquet(src / "manifest.parquet")
        (dst / "images").mkdir(parents=True)
        shas, images = [], []
        for row in m.itertuples():
            if row.split in ("val", "test"):
                box = served.get(row.listing_id)
                box = None if box is None or (isinstance(box, float) and np.isnan(box)) else list(box)
                sources["served detector" if box is not None else "served detector found none"] += 1
            else:
                box = labelled_box(row.boxes)
                sources["labelled"] += 1
            boxes_by_listing[f"{pointer.stem}/{row.listing_id}"] = labelled_box(row.boxes)
            data = crop(src / row.image, box, pad, size)
            rel = f"images/{row.listing_id}.png"
            (dst / rel).write_bytes(data)
            shas.append(hashlib.sha256(data).hexdigest())
            images.append(rel)
        m["sha256"], m["image"] = shas, images
        m.to_parquet(dst / "manifest.parquet", index=False)
    g = pd.read_parquet(ws / "gallery" / "manifest.parquet")
    (scratch / "gallery" / "photos").mkdir(parents=True)
    shas, images = [], []
    for row in g.itertuples():
        box = boxes_by_listing.get(row.source.removeprefix("data:")) if str(row.source).startswith("data:") else None
        data = crop(ws / "gallery" / row.image, box, pad, size)
        sha = hashlib.sha256(data).hexdigest()
        (scratch / "gallery" / "photos" / f"{sha}.png").write_bytes(data)
        shas.append(sha)
        images.append(f"photos/{sha}.png")
    g["sha256"], g["image"] = shas, images
    g.to_parquet(scratch / "gallery" / "manifest.parquet", index=False)
    (scratch / "box_sources.json").write_text(json.dumps(sources))
    return sources


def sku(ws: Path, scratch: Path) -> dict:
    from pipelines.train import families

    families.train("sku", scratch)
    metrics = families.evaluate("sku", scratch)
    before = json.loads((ws / "metrics" / "sku.json").read_text())
    rows = {}
    for split in ("validation", "test"):
        rows[split] = {k: {"whole_photo": before[split].get(k), "product_crop": metrics[split].get(k)} for k in KEYS}
        for k in KEYS:
            print(f"{split:>10} {k:>35}: whole photo {before[split].get(k)}  product crop "
                  f"{round(metrics[split].get(k), 4)}", flush=True)
    return {"thresholds": {"whole_photo": before["thresholds"], "product_crop": metrics["thresholds"]}, "figures": rows}


def fpr_at_recall(scores: np.ndarray, labels: np.ndarray, recalls=(0.90, 0.95, 0.98)) -> dict:
    """The false-positive rate of a net whose threshold is set on the split itself to catch each share of its
    positives: the two nets' curves compared without the validation tail that places calibrated thresholds (not a
    deployable threshold)."""
    pos = np.sort(scores[labels])[::-1]
    out = {f"fpr_at_recall_{r}": round(float((scores[~labels] >= pos[int(np.ceil(r * len(pos))) - 1]).mean()), 4)
           for r in recalls}
    return {**out, "positives": int(labels.sum()), "negatives": int((~labels).sum())}


def defects(ws: Path, scratch: Path, train: bool = True) -> dict:
    from pipelines.data.dataset import split_frame
    from pipelines.params import load_params
    from pipelines.train.families import common, detector

    if train:
        detector.train_defects(scratch, load_params(scratch / "params.yaml"))
    out, matched = {}, {}
    for label, root in (("whole_photo", ws), ("product_crop", scratch)):
        params = load_params(root / "params.yaml")
        df = common.load_frame(root)
        frames = {s: split_frame(df, s) for s in ("val", "test")}
        nets = {s: detector.defect_scores(root, params, d) for s, d in frames.items()}
        out[label], matched[label] = {}, {}
        for name, (applies, column) in detector.CHECKS.items():
            thr, _, val_m, test_m, _ = detector._check_metrics(frames, nets, name, params)
            keep = ("recall", "precision", "false_positive_rate", "flagged_share", "auc", "average_precision")
            out[label][name] = {"threshold": thr, "val": {k: val_m.get(k) for k in keep},
                                "test": {k: test_m.get(k) for k in keep}}
            t = out[label][name]["test"]
            print(f"{label:>12} {name:>15}: test recall {t['recall']:.3f}, false positive rate "
                  f"{t['false_positive_rate']:.3f}, AP {t['average_precision']:.3f} (threshold {thr:.4f})", flush=True)
            for split, d in frames.items():
                m = applies(d).to_numpy()
                matched[label].setdefault(name, {})[split] = fpr_at_recall(
                    nets[split][f"{name}_score"].to_numpy()[m], d[column].to_numpy(bool)[m])
                print(f"{label:>12} {name:>15} {split}: {matched[label][name][split]}", flush=True)
    return {**out, "false_positive_rate_at_matched_recall": matched,
            "matched_recall_note": "each net's threshold set on the split itself to catch 90/95/98% of its positives "
                                   "(fpr_at_recall: not a deployable threshold; the comparison of the two nets' "
                                   "curves without the validation tail that places the calibrated thresholds)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--scratch", type=Path, required=True)
    ap.add_argument("--pad", type=float, default=1.25)
    ap.add_argument("--family", nargs="+", default=["sku"], choices=["sku", "defects"])
    ap.add_argument("--reuse", action="store_true", help="keep the scratch copy an earlier run built")
    ap.add_argument("--no-train", action="store_true",
                    help="defects: score the net an earlier run trained in the scratch copy (with --reuse)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()

    from pipelines.params import load_params

    ws, scratch = args.workspace.resolve(), args.scratch.resolve()
    params = load_params(ws / "params.yaml")
    size = params.train.input_size("sku")
    started = time.time()
    if args.reuse and (scratch / "box_sources.json").is_file():
        sources = json.loads((scratch / "box_sources.json").read_text())
    else:
        sources = build_scratch(ws, scratch, args.pad, size)
    crop_seconds = time.time() - started
    print(f"scratch copy ready in {crop_seconds:.0f} s: {sources}", flush=True)
    for family in args.family:
        t0 = time.time()
        result = sku(ws, scratch) if family == "sku" else defects(ws, scratch, train=not args.no_train)
        doc = {**header(f"python benchmarks/product_crop.py <demo workspace> --scratch <dir> --pad {args.pad} "
                        f"--family {family}" + (" --reuse --no-train" if family == "defects" and args.no_train else "")),
               "pad": args.pad, "size": size, "box_sources": sources,
               "train_and_evaluate_seconds": round(time.time() - t0, 1),
               "trained_in_this_run": family == "sku" or not args.no_train,
               "note": "one seed (%d); the whole-photo figures are the workspace's own candidate" % params.seed,
               **result}
        out = args.results / ("sku_crop.json" if family == "sku" else "defects_crop.json")
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
