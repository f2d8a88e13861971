"""The served families share their frozen trunk: each stage runs once per photo, and the answers are the
whole networks' (the trained tiny project's five families, exported as the registry exports them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.params import load_params
from pipelines.data.dataset import split_frame
from pipelines.release.export import export_bundle, parity_photos
from pipelines.serve.images import product_crop
from pipelines.serve.models import ReviewerModels, product_boxes
from pipelines.train.families.common import load_frame
from pipelines.train.families.sku import labelled_boxes
from pipelines.train import families
from pipelines.train.families import FAMILIES
from pipelines.train.onnx_export import export_dynamic_batch
from pipelines.train.trunk import to_input


@pytest.fixture(scope="module")
def exported(trained_project, tmp_path_factory) -> dict:
    params = load_params(trained_project / "params.yaml")
    out = tmp_path_factory.mktemp("bundles")
    bundles = {f: out / f for f in FAMILIES}
    for family, path in bundles.items():
        export_bundle(family, trained_project, params, path)
    # the SKU graph served on the product crop (what train.sku.crop_pad sets; off by default): serving's side of it
    meta = json.loads((bundles["sku"] / "meta.json").read_text())
    meta["graphs"]["sku"].setdefault("crop", {"box": "product", "pad": 1.25})
    (bundles["sku"] / "meta.json").write_text(json.dumps(meta))
    return {"root": trained_project, "params": params, "bundles": bundles}


class Counting:
    """An ONNX Runtime session that records the rows of every batch it runs."""

    def __init__(self, session):
        self.session, self.rows = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feed):
        self.rows.append(len(next(iter(feed.values()))))
        return self.session.run(names, feed)


def _stage_ids(bundle: Path) -> dict[str, list[str]]:
    meta = json.loads((bundle / "meta.json").read_text())
    return {name: [s["id"] for s in g.get("trunk", [])] for name, g in meta["graphs"].items()}


def test_every_family_names_its_trunk_stages_and_each_stage_runs_once_per_photo(exported):
    params, bundles = exported["params"], exported["bundles"]
    named = {f: _stage_ids(p) for f, p in bundles.items()}
    splits = {"blur": params.train.blur.trunk_split, "manipulation": params.train.manipulation.trunk_split,
              "sku": params.train.sku.trunk_split, "prohibited": params.train.prohibited.trunk_split,
              "detector": params.train.defects.trunk_split}
    graph = {"blur": "blur", "manipulation": "manipulation", "sku": "sku", "prohibited": "prohibited",
             "detector": "defects"}
    for family, split in splits.items():
        assert len(named[family][graph[family]]) == split, (family, named[family])
    deepest = max(splits.values())
    models = ReviewerModels(bundles, threads=2)
    assert len(models.stages) == deepest, sorted(models.stages)       # one session per stage, not per family
    assert models.cropped == ["sku"]                                   # the SKU embedding reads the product crop
    counting = {k: Counting(s) for k, s in models.stages.items()}
    models.stages.update(counting)
    photos = parity_photos(exported["root"], 6)
    answers = models.infer(photos)
    # once per photo, and once more per crop for the stages the SKU graph runs on its crops
    inputs = {k: 1 + (k.removesuffix(":int8") in named["sku"]["sku"]) for k in counting}
    assert sum(inputs.values()) == len(counting) + params.train.sku.trunk_split, inputs
    assert all(sum(c.rows) == inputs[k] * len(photos) for k, c in counting.items()), \
        {k: c.rows for k, c in counting.items()}
    assert all({"blur", "manipulation", "sku", "prohibited", "defects", "boxes"} <= set(a) for a in answers)
    one = models.infer(photos[:1])                                   # one photo: the same answer as in the batch
    assert one[0]["blur"] == pytest.approx(answers[0]["blur"], abs=1e-5)
    serial = models.infer_serial(photos)                             # every unit on this thread
    models.chunk = 2                                                 # chunks of 2 to whichever thread is free
    for other in (serial, models.infer(photos)):
        for check in ("blur", "manipulation"):
            assert [a[check] for a in other] == pytest.approx([a[check] for a in answers], abs=1e-5)
        assert [a["boxes"] for a in other] == [a["boxes"] for a in answers]


def test_the_served_outputs_are_the_whole_networks_and_a_bundle_without_stages_still_serves(exported, tmp_path):
    root, params, bundles = exported["root"], exported["params"], exported["bundles"]
    photos = parity_photos(root, 4)
    models = ReviewerModels(bundles, threads=2, int8=())                     # FP32: INT8 twins have their own test
    served = models.outputs(photos)
    detected = product_boxes(models.infer(photos))                          # the product boxes the crop reads
    # the photos' labelled boxes (every test photo with a product has one): crops that are not the whole photo
    labelled = labelled_boxes(split_frame(load_frame(root), "test").sort_values("listing_id").head(len(photos)))
    pads = {name: (g.get("crop") or {}).get("pad") for path in bundles.values()
            for name, g in json.loads((path / "meta.json").read_text())["graphs"].items()}
    assert sum(b is not None for b in labelled) >= 2, labelled
    cropped = models.outputs(photos, boxes=labelled)
    for family in FAMILIES:
        for graph in families.get(family).bundle(root, params).graphs:
            for boxes, out in ((detected, served), (labelled, cropped)):
                seen = [product_crop(p, b, pads[graph.name], graph.size) for p, b in zip(photos, boxes)] \
                    if pads[graph.name] else list(photos)
                with torch.no_grad():
                    whole = graph.module.eval()(to_input(seen, graph.size)).numpy().reshape(len(photos), -1)
                np.testing.assert_allclose(out[graph.name], whole, atol=1e-4, err_msg=graph.name)
    assert not np.allclose(cropped["sku"], served["sku"], atol=1e-3) or detected == labelled   # crops are read

    # a bundle registered before the shared trunk: one whole graph reading the photos
    old = tmp_path / "blur"
    shutil.copytree(bundles["blur"], old)
    shutil.rmtree(old / "trunk")
    meta = json.loads((old / "meta.json").read_text())
    del meta["graphs"]["blur"]["trunk"]
    (old / "meta.json").write_text(json.dumps(meta))
    graph = families.get("blur").bundle(root, params).graphs[0]
    export_dynamic_batch(graph.module, torch.zeros(2, 3, graph.size, graph.size), old / "blur.onnx", "photos", "out")
    mixed = ReviewerModels({**bundles, "blur": old}, threads=2, int8=())
    np.testing.assert_allclose(mixed.outputs(photos)["blur"], served["blur"], atol=1e-5)
    assert len(mixed.stages) == len(ReviewerModels(bundles, threads=1).stages)   # the others still share theirs


def test_a_stage_on_the_crops_is_a_unit_of_its_own_for_int8(exported, tmp_path):
    """The SKU graph's trunk stages on the product crops are named apart from the same stages on the photos
    (``<id>@crop<pad>``): one can serve INT8 while the other stays FP32, each precision one shared session."""
    from pipelines.release.quantize import entries, quantize_bundle, set_precision
    from pipelines.serve.bundle import read_meta
    from pipelines.serve.models import unit_name

    root, bundles = exported["root"], exported["bundles"]
    sku = tmp_path / "sku"
    shutil.copytree(bundles["sku"], sku)
    meta = read_meta(sku)
    stage = meta["graphs"]["sku"]["trunk"][-1]
    crop_unit = unit_name("sku", meta["graphs"]["sku"], stage)
    assert crop_unit == f"{stage['id']}@crop1.25"
    assert crop_unit in {u for u, _ in entries(meta)} and stage["id"] not in {u for u, _ in entries(meta)}
    photos = parity_photos(root, 4)
    report = quantize_bundle(sku, photos, [crop_unit], served=[crop_unit])
    assert set(report) == {crop_unit}
    assert dict(entries(read_meta(sku)))[crop_unit]["precision"] == "int8"      # what the service then runs
    served = {**bundles, "sku": sku}
    models = ReviewerModels(served, threads=1, int8=[crop_unit])
    assert models.precision[crop_unit] == "int8" and models.precision[stage["id"]] == "fp32"
    assert {stage["id"], f"{stage['id']}:int8"} <= set(models.stages)
    fp32 = ReviewerModels(served, threads=1, int8=()).infer(photos)
    mixed = models.infer(photos)
    for check in ("blur", "manipulation", "prohibited", "defects"):  # the photos' stages: untouched
        assert [a[check] for a in mixed] == [a[check] for a in fp32], check
    assert [a["sku"]["similarity"] for a in mixed] != [a["sku"]["similarity"] for a in fp32]
    set_precision(sku, [])                                           # and back: every unit FP32
    assert all(e.get("precision", "fp32") == "fp32" for _, e in entries(read_meta(sku)))


def test_the_served_sku_answer_through_the_gallery_index_is_exact_search_when_every_list_is_read(exported):
    """``serving.gallery_index`` from 0 MiB: the trained gallery goes through faiss's IVF index in the served models;
    reading every list it answers what the exact search answers (pipelines/serve/gallery_index.py)."""
    root, params, bundles = exported["root"], exported["params"], exported["bundles"]
    photos = parity_photos(root, 6)
    config = params.serving.gallery_index.model_dump() | {"min_mib": 0, "nlist": 4, "nprobe": 4}
    sku = {"sku": bundles["sku"], "detector": bundles["detector"]}
    exact, indexed = ReviewerModels(sku, threads=1), ReviewerModels(sku, threads=1, gallery_index=config)
    assert exact.graphs["sku"][3].kind == "exact"
    assert indexed.graphs["sku"][3].kind.startswith("faiss IndexIVFFlat nlist ")
    for a, b in zip(exact.infer(photos), indexed.infer(photos)):
        assert [s for s, _ in a["sku"]["candidates"]] == [s for s, _ in b["sku"]["candidates"]]
        assert a["sku"]["predicted"] == b["sku"]["predicted"]
        assert b["sku"]["similarity"] == pytest.approx(a["sku"]["similarity"], abs=1e-5)
