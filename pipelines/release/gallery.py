"""``reviewops gallery deploy``: serve the current SKU gallery without retraining.

The gallery's photos (``pipelines.data.gallery``) are embedded by the production SKU bundle's own ONNX graph,
decoded and prepared exactly as the service prepares an upload; the bundle is copied with the new
``gallery.npy`` and ``meta.json`` (``gallery_skus``, ``sku_categories``; everything else kept), registered
as a new ``reviewops-sku`` version (the production model's metadata plus ``gallery``) and promoted; then the
reviewer Bento is built (with its golden smoke set recomputed) and deployed blue/green, which switches only
if the smoke set matches. A gallery already in production is not registered again; a Bento already built
from the production models is not built again; deploying the active Bento changes nothing.

No torch on this path: ONNX Runtime, the BentoML store and the blue/green deploy only.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.data import gallery as gal
from pipelines.params import Params
from pipelines.release.rollout import copy_bundle, timed as _timed
from pipelines.serve.bundle import BUNDLE_META, GALLERY_FILE, read_meta

FAMILY = "sku"
RECORD = Path("reports") / "gallery_deploy.json"


class GalleryDeployError(RuntimeError):
    """The gallery could not be embedded, registered, built or deployed; the message says why."""


def embed(bundle: Path, paths: list[str], params: Params, batch: int = 32, detector: Path | None = None) -> np.ndarray:
    """L2-normalised embeddings of the photos at ``paths`` by the bundle's embedding graph, as the service computes them
    (a graph that reads the product crop crops by ``detector``'s boxes, the production detector bundle)."""
    from pipelines.serve.models import ReviewerModels, prepare
    from pipelines.serve.photo_input import PhotoError, decode_photo, photo_limits

    names = [n for n, g in read_meta(bundle)["graphs"].items() if g["output"] == "embedding"]
    if len(names) != 1:
        raise GalleryDeployError(f"{bundle} has {len(names)} embedding graphs; expected one")
    crops = [n for n in names if read_meta(bundle)["graphs"][n].get("crop")]
    if crops and detector is None:
        raise GalleryDeployError(f"{bundle}'s embedding reads the product crop: a detector bundle must find the boxes")
    models = ReviewerModels({"sku": bundle, **({"detector": detector} if crops else {})}, threads=params.train.threads)
    limits, size = photo_limits(params), params.data.image_size
    out = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        try:
            photos = np.stack([prepare(decode_photo(Path(p).read_bytes(), **limits), size) for p in chunk])
        except PhotoError as exc:
            raise GalleryDeployError(f"a gallery photo of {chunk} is refused by the service's decoder: {exc}") from None
        out.append(models.outputs(photos)[names[0]])
    e = np.concatenate(out).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)


def gallery_bundle(base: Path, out: Path, df, embeddings: np.ndarray) -> dict:
    """``out``: a copy of the bundle ``base`` with the gallery of ``df`` (rows in the order of ``embeddings``)."""
    copy_bundle(base, out)
    meta = read_meta(base)
    meta.update(gallery_skus=[str(s) for s in df["sku_id"]],                 # as the family's own bundle() writes them
                sku_categories={str(k): str(v) for k, v in zip(df["sku_id"], df["category"])})
    np.save(out / GALLERY_FILE, embeddings)
    (out / BUNDLE_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return read_meta(out)


def register_gallery(root: Path, params: Params, timings: dict) -> dict:
    """Embed the gallery with the production SKU bundle, register and promote the result (unless in production)."""
    from pipelines.release import registry

    df = gal.read_gallery(root)
    if df.empty:
        raise GalleryDeployError(f"the gallery of {root} is empty: enrol SKUs first (reviewops gallery add / seed)")
    version = gal.version(root)
    if version is None:
        raise GalleryDeployError(f"the gallery of {root} is not versioned (no {gal.POINTER}): run `reviewops gallery "
                                 f"seed` or change it with `reviewops gallery add`/`remove`, which version it")
    current = registry.production().get(FAMILY)
    if current is None:
        raise GalleryDeployError("no production sku model to embed the gallery with: run `reviewops gate` first")
    info = registry.model_info(current)
    metadata = dict(info["metadata"])
    served = (metadata.get("gallery") or {}).get("version")
    entry = {"skus": int(df["sku_id"].nunique()), "photos": int(len(df)), "version": version, "base": current}
    if served == version:
        print(f"gallery {version} is already in production ({current}): nothing to register", flush=True)
        return {**entry, "tag": current, "registered": False}
    started = time.perf_counter()
    detector = registry.production().get("detector")           # the crop graph's boxes, as the service finds them
    embeddings = embed(Path(info["path"]), list(df["path"]), params,
                       detector=None if detector is None else Path(registry.model_info(detector)["path"]))
    _timed(timings, f"embed {len(df)} gallery photos", started)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bundle-sku-gallery-") as tmp:
        gallery_bundle(Path(info["path"]), Path(tmp) / "bundle", df, embeddings)
        commit = (gal.show(root)["last_commit"] or {}).get("commit")
        metadata["gallery"] = {"version": version, "skus": int(df["sku_id"].nunique()), "photos": int(len(df)),
                               "commit": commit, "base_model": current,
                               "trained_model": (metadata.get("gallery") or {}).get("trained_model", current)}
        metadata["registered_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        tag = registry.register_bundle(FAMILY, Path(tmp) / "bundle", metadata)
    registry.promote(FAMILY, tag, reason=f"gallery {version}")
    _timed(timings, f"register and promote {tag}", started)
    return {**entry, "tag": tag, "registered": True}


def deploy_gallery(root: Path, params: Params, port: int | None = None, *, ready_timeout: float = 300.0) -> dict:
    """Register the gallery (``register_gallery``), build the Bento, deploy it blue/green; per-step timings."""
    from pipelines.release import registry
    from pipelines.release.rollout import rollout
    from pipelines.serve.decision import gallery_version

    root = Path(root).resolve()
    done = rollout(root, params, FAMILY, lambda timings: register_gallery(root, params, timings), port=port,
                   ready_timeout=ready_timeout, restore=True)   # a failed build or deploy moves production back
    registered = done["registered"]
    result = {**registered, "served_gallery_version": gallery_version(registry.model_info(registered["tag"])["path"]),
              **{k: done[k] for k in ("bento", "deploy", "timings", "seconds")}}
    (root / RECORD).parent.mkdir(parents=True, exist_ok=True)
    (root / RECORD).write_text(json.dumps(result, indent=1, default=str))
    return result
