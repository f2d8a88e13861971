"""The annotation queue on disk, in the files Label Studio imports.

``data/annotation/<family>[-<category>]/<stamp>/`` holds

- ``images/``: the selected photos;
- ``queue.csv``: rank, listing_id, path, score = p, uncertainty, source, source_manifest, sha256;
- ``label_studio.json``: Label Studio tasks with the model's pre-annotation: a yes/no choice for a
  prohibited category, dirt rectangles from YOLO boxes at or above ``active_learning.box_confidence``
  in percent coordinates. The prediction ``score`` is ``1 - uncertainty``, so Label Studio's "sort by
  prediction score" shows the most uncertain first;
- ``label_config.xml``: the labeling interface that matches those pre-annotations.

Image URLs are Label Studio local-file URLs relative to the project root
(``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<project>``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd
from PIL import Image

ANNOTATION_DIR = Path("data/annotation")
LOCAL_FILES = "/data/local-files/?d="


def folder_name(stamp: str) -> str:
    """A queue's folder name from a stamp (an Airflow run id such as ``scheduled__2026-01-05T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stamp).strip("-.")


def queue_dir(root: Path, family: str, category: str | None, stamp: str) -> Path:
    return root / ANNOTATION_DIR / (f"{family}-{category}" if category else family) / stamp


def queue_target(queue: str) -> tuple[str, str | None]:
    """(family, category or None) of a queue folder (``data/annotation/<family>[-<category>]/<stamp>``)."""
    name = Path(queue).parent.name
    family, _, category = name.partition("-")
    return family, category or None


def control_name(family: str, category: str | None) -> str:
    """The ``from_name`` of the answer: the category (a yes/no choice) or ``dirt`` (rectangles)."""
    return category if family == "prohibited" else "dirt"


def label_config(family: str, category: str | None) -> str:
    """The labeling interface that matches the tasks' pre-annotations."""
    name = quoteattr(control_name(family, category))
    if family == "prohibited":
        return (f'<View>\n  <Header value={quoteattr(f"Does the photo show {category}?")}/>\n'
                f'  <Image name="image" value="$image" zoom="true"/>\n'
                f'  <Choices name={name} toName="image" choice="single" showInline="true" required="true">\n'
                f'    <Choice value="yes"/>\n    <Choice value="no"/>\n  </Choices>\n</View>\n')
    return ('<View>\n  <Header value="Draw a box around every dirt spot on the product; none: submit with no box"/>\n'
            '  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name={name} toName="image" canRotate="false">\n'
            '    <Label value="dirt" background="red"/>\n  </RectangleLabels>\n</View>\n')


def rectangle(box: tuple[float, ...], width: int, height: int, name: str = "dirt", rid: str = "") -> dict:
    """A Label Studio ``rectanglelabels`` region from a normalised ``(x0, y0, x1, y1[, conf])`` box."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box[:4])
    region = {"id": rid, "from_name": name, "to_name": "image", "type": "rectanglelabels",
              "original_width": int(width), "original_height": int(height), "image_rotation": 0,
              "value": {"x": 100 * x0, "y": 100 * y0, "width": 100 * (x1 - x0), "height": 100 * (y1 - y0),
                        "rotation": 0, "rectanglelabels": ["dirt"]}}
    if len(box) > 4:
        region["score"] = float(box[4])
    return region


def task(row, url: str, queue: str, family: str, category: str | None, version: str, boxes) -> dict:
    """One Label Studio task: the photo, ids to find it again, and the model's pre-annotation."""
    name = control_name(family, category)
    if family == "prohibited":
        result = [{"id": f"{row.listing_id}-choice", "from_name": name, "to_name": "image", "type": "choices",
                   "value": {"choices": ["yes" if row.score >= 0.5 else "no"]}}]
    else:
        with Image.open(row.path) as im:
            width, height = im.size
        result = [rectangle(b, width, height, name, f"{row.listing_id}-{j}") for j, b in enumerate(boxes)]
    return {"data": {"image": url, "listing_id": row.listing_id, "queue": queue},
            "predictions": [{"model_version": version, "score": float(1.0 - row.uncertainty), "result": result}]}


def write_queue(root: Path, dest: Path, picked: pd.DataFrame, family: str, category: str | None, version: str,
                boxes: list | None) -> None:
    """Photos, queue.csv, label_studio.json, label_config.xml; written aside, then moved into place.

    ``picked`` has the pool's columns plus rank, score and uncertainty; ``boxes`` (dirt only) the
    pre-filled rectangles of each picked photo.
    """
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rel_queue = dest.relative_to(root).as_posix()
    rows, tasks = [], []
    for j, row in enumerate(picked.itertuples(index=False)):
        name = f"images/{row.listing_id}{Path(row.path).suffix.lower()}"
        shutil.copyfile(row.path, tmp / name)
        rel = f"{rel_queue}/{name}"
        rows.append({"rank": row.rank, "listing_id": row.listing_id, "path": rel, "score": row.score,
                     "uncertainty": row.uncertainty, "source": row.path, "source_manifest": row.source_manifest,
                     "sha256": row.sha256})
        tasks.append(task(row, LOCAL_FILES + rel, rel_queue, family, category, version,
                          boxes[j] if boxes is not None else None))
    pd.DataFrame(rows).to_csv(tmp / "queue.csv", index=False, float_format="%.6f")
    (tmp / "label_studio.json").write_text(json.dumps(tasks, indent=1) + "\n")
    (tmp / "label_config.xml").write_text(label_config(family, category))
    shutil.rmtree(dest, ignore_errors=True)  # a retried run with the same stamp replaces its own queue
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
