"""A registered family's bundle as serving reads it: ONNX graphs, the files they need and ``meta.json``.

``meta.json`` says, for every graph, its file, input side and what its output is, so the serving
side runs any bundle without knowing the family that made it:

    {"family": "prohibited", "thresholds": {"cash": 0.41, ...},
     "graphs": {"prohibited": {"file": "prohibited.onnx", "size": 192, "output": "scores",
                               "labels": ["cash", "knife", ...]}}, ...}

Output kinds: ``score`` (one number per photo), ``scores`` (one per label), ``embedding`` (matched
against ``gallery.npy`` of ``meta["gallery_skus"]``). A ``yolo`` entry names the detector graph
(file, input side, confidence, class names); its boxes are decoded by :mod:`pipelines.serve.yolo`. A graph
with ``"crop": {"box": "product", "pad": 1.25}`` reads the square around the detector's product box instead of the
photo (:func:`pipelines.serve.images.product_crop`; the SKU embedding, ``train.sku.crop_pad``).
"""

from __future__ import annotations

import json
from pathlib import Path

BUNDLE_META = "meta.json"
# 1: one whole graph per network; 2: frozen trunk stages in ``trunk/``, shared across bundles, and graphs that may
# serve as INT8 (``"precision"``). A production model of an older format is registered again by the gate.
BUNDLE_FORMAT = 2
GALLERY_FILE = "gallery.npy"
OUTPUT_KINDS = ("score", "scores", "embedding")


def read_meta(bundle: str | Path) -> dict:
    """The bundle's ``meta.json``; a bundle without one, or with a graph of an unknown output kind, is an error."""
    path = Path(bundle) / BUNDLE_META
    if not path.is_file():
        raise FileNotFoundError(f"{bundle} is not a model bundle: it has no {BUNDLE_META}")
    meta = json.loads(path.read_text())
    for name, graph in meta.get("graphs", {}).items():
        if graph.get("output") not in OUTPUT_KINDS:
            raise ValueError(f"{path}: graph {name!r} has output kind {graph.get('output')!r}; "
                             f"expected one of {', '.join(OUTPUT_KINDS)}")
    return meta
