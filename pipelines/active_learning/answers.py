"""Answers back: Label Studio's JSON export of answered tasks becomes a new batch in ``data/incoming/``.

    reviewops import-labels EXPORT [--batch ID]      # then reviewops validate and reviewops version

The manifest needs every label of the platform (blur votes, SKU, stickers, ...), and a one-question task
collects one: the answer replaces that label, and every other column is copied from the photo's source
manifest (a generated pool carries the generator's labels, unused by selection). A photo without a
source manifest (from the prediction log or a plain folder) cannot become a manifest row: the import
refuses it and says so rather than invent labels.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.active_learning.label_studio import queue_target
from pipelines.active_learning.pool import PoolError, sha256_file
from pipelines.data import manifest as mf
from pipelines.data.dataset import INCOMING_DIR, versioned_manifest
from pipelines.data.validate import SELECTION_FILE  # in an imported batch: which queues and export it came from

__all__ = ["SELECTION_FILE", "answers", "apply_answer", "import_labels"]


def answers(export: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(task data, result) of every task with a submitted annotation; the latest annotation counts."""
    out = []
    for t in export:
        done = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if done:
            out.append((t["data"], done[-1].get("result") or []))
    return out


def _answer_choice(result: list[dict], name: str) -> bool | None:
    for r in result:
        if r.get("from_name") == name and r.get("type") == "choices" and r["value"].get("choices"):
            return r["value"]["choices"][0] == "yes"
    return None


def _answer_boxes(result: list[dict], name: str) -> list[dict]:
    boxes = []
    for r in result:
        if r.get("from_name") == name and r.get("type") == "rectanglelabels":
            v = r["value"]
            x0, y0 = max(0.0, v["x"] / 100), max(0.0, v["y"] / 100)
            x1, y1 = min(1.0, (v["x"] + v["width"]) / 100), min(1.0, (v["y"] + v["height"]) / 100)
            if x1 > x0 and y1 > y0:
                boxes.append({"label": "dirt", "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return boxes


def apply_answer(row: dict, family: str, category: str | None, result: list[dict]) -> dict | None:
    """The manifest row with the annotator's answer in place of the asked label (None: not answered)."""
    row = dict(row)
    if family == "prohibited":
        yes = _answer_choice(result, category)
        if yes is None:
            return None
        row["prohibited"] = [c for c in row["prohibited"] if c != category] + ([category] if yes else [])
        row["boxes"] = [b for b in row["boxes"] if yes or b["label"] != f"prohibited:{category}"]
    else:
        drawn = _answer_boxes(result, "dirt")
        row["dirt"] = bool(drawn)
        row["boxes"] = [b for b in row["boxes"] if b["label"] != "dirt"] + drawn
    return row


def import_labels(export_json: str | Path, root: str | Path | None = None, batch_id: str | None = None) -> Path:
    """Label Studio's JSON export of answered tasks -> ``data/incoming/<batch_id>/`` (photos + manifest).

    Default batch id: ``al-<family>[-<category>]-<queue stamp>`` (one queue per export). Tasks with no
    submitted annotation are left out; a photo already in the versioned data is left out (its label
    is there); a photo without a source manifest is refused (see the module doc). The batch carries
    ``selection.json``: the queues, the export (path and SHA-256) and the counts. Such a batch is
    enriched in the rare label by design, which the validation suite's prevalence bounds (set for
    random batches) may refuse.
    """
    root = Path(root or Path.cwd()).resolve()
    answered = answers(json.loads(Path(export_json).read_text()))
    if not answered:
        raise PoolError(f"{export_json} holds no submitted annotation")
    queues = sorted({data["queue"] for data, _ in answered})
    if batch_id is None:
        if len(queues) != 1:
            raise PoolError(f"the export spans {len(queues)} queues {queues}: name the batch (batch_id)")
        batch_id = f"al-{Path(queues[0]).parent.name}-{Path(queues[0]).name}"
    dest = root / INCOMING_DIR / batch_id
    if dest.exists():
        raise FileExistsError(f"{dest} already exists: import into another batch id")
    listed = {q: pd.read_csv(root / q / "queue.csv", keep_default_na=False).set_index("listing_id") for q in queues}
    labelled = set(versioned_manifest(root)["sha256"])
    sources: dict[str, pd.DataFrame] = {}
    rows, photos, unlabelled, known = [], [], [], 0
    for data, result in answered:
        entry = listed[data["queue"]].loc[data["listing_id"]]
        if entry["sha256"] in labelled:
            known += 1
            continue
        if not entry["source_manifest"]:
            unlabelled.append(data["listing_id"])
            continue
        if entry["source_manifest"] not in sources:
            sources[entry["source_manifest"]] = mf.read_manifest(Path(entry["source_manifest"]).parent) \
                .set_index("listing_id", drop=False)
        family, category = queue_target(data["queue"])
        row = apply_answer(sources[entry["source_manifest"]].loc[data["listing_id"]].to_dict(), family, category, result)
        if row is None:
            continue
        image = f"{mf.IMAGES_DIR}/{data['listing_id']}{Path(entry['path']).suffix}"
        rows.append({**{c: row[c] for c in mf.COLUMNS}, "batch": batch_id, "image": image})
        photos.append((root / entry["path"], image))
    if unlabelled:
        raise PoolError(f"{len(unlabelled)} answered photos (first: {unlabelled[:3]}) have no source manifest: a "
                        f"batch row needs every label of pipelines/data/manifest.py (blur votes, SKU, stickers, ...) and "
                        f"the annotators gave one; label them in a full review task instead")
    if not rows:
        raise PoolError(f"{export_json}: no answered photo is new to the versioned data")
    tmp = dest.with_name(f".{batch_id}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / mf.IMAGES_DIR).mkdir(parents=True)
    for src, image in photos:
        shutil.copyfile(src, tmp / image)
    mf.write_manifest(pd.DataFrame(rows), tmp)
    provenance = {"selected_by": "active_learning", "queues": queues, "export": str(Path(export_json).resolve()),
                  "export_sha256": sha256_file(Path(export_json)), "answered": len(answered), "imported": len(rows),
                  "already_versioned": known, "without_answer": len(answered) - len(rows) - known,
                  "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / SELECTION_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
    tmp.rename(dest)
    return dest
