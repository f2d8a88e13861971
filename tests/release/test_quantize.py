"""INT8 graphs (pipelines/release/quantize.py, reviewer.choose_int8): quantized for real on the trained tiny
project, chosen by the whole reviewer's test figures, served where chosen, re-made identically at register."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipelines.params import load_params
from pipelines.release.reviewer import int8_holds, select_int8


def figures(auto_pass: float, **recall: float) -> dict:
    return {"clean_auto_pass": auto_pass, "photo_recall": {"blur": 1.0, "dirt": 0.95, "prohibited:cash": 1.0, **recall}}


def test_int8_holds_keeps_every_floor_and_the_auto_pass_within_the_allowed_drop():
    params = load_params()            # floors: blur 0.95, dirt 0.90, prohibited 0.90; max_auto_pass_drop 0.01
    fp32 = figures(0.30)
    assert int8_holds(figures(0.295, dirt=0.91), fp32, params) == []                # floor kept, drop 0.005
    assert int8_holds(figures(0.285), fp32, params) == ["clean auto-pass 0.285 < 0.300 - 0.01"]
    assert int8_holds(figures(0.305), fp32, params) == []
    assert int8_holds(figures(0.315), fp32, params) == ["clean auto-pass 0.315 > 0.300 + 0.01"]   # moved: not the same
    assert int8_holds(figures(0.30, dirt=0.85), fp32, params) == ["photo recall dirt 0.850 < 0.900"]
    assert int8_holds(figures(0.30, **{"prohibited:cash": 0.8}), fp32, params) == \
        ["photo recall prohibited:cash 0.800 < 0.900"]
    below = figures(0.30, dirt=0.80)                     # FP32 itself below the floor: INT8 must not go lower
    assert int8_holds(figures(0.30, dirt=0.80), below, params) == []
    assert int8_holds(figures(0.30, dirt=0.75), below, params) == ["photo recall dirt 0.750 < 0.800"]


def test_int8_holds_keeps_the_real_photo_figures_within_the_allowed_change_either_way():
    params = load_params()            # serving.int8.max_real_photo_change 0.03
    fp32 = {**figures(0.30), "real_photos": {"blur_pooled_spearman": 0.873, "manipulation_false_alarms": 0.40}}

    def real(**values):
        return {**figures(0.30), "real_photos": {**fp32["real_photos"], **values}}

    assert int8_holds(real(blur_pooled_spearman=0.85), fp32, params) == []
    assert int8_holds(real(blur_pooled_spearman=0.823), fp32, params) == \
        ["real photos blur_pooled_spearman 0.823 against FP32's 0.873 (more than 0.03 apart)"]
    assert int8_holds(real(manipulation_false_alarms=0.44), fp32, params) != []       # one way...
    assert int8_holds(real(manipulation_false_alarms=0.36), fp32, params) != []       # ...or the other
    assert int8_holds(figures(0.30), fp32, params) == []          # not measured (no real-photo family): not judged


def test_select_int8_tries_all_then_one_at_a_time_keeping_only_what_holds():
    params = load_params()
    calls = []

    def figures_of(units):
        calls.append(list(units))
        return figures(0.30, dirt=0.85 if "dirt_tail" in units else 0.95)    # the dirt tail alone breaks a floor

    kept, tried, fp32 = select_int8(["prohibited", "dirt_tail", "stage3"], figures_of, params)
    assert kept == ["prohibited", "stage3"] and fp32["photo_recall"]["dirt"] == 0.95
    assert calls == [[], ["prohibited", "dirt_tail", "stage3"], ["prohibited"], ["prohibited", "dirt_tail"],
                     ["prohibited", "stage3"]]
    assert [t["holds"] for t in tried] == [False, True, False, True]
    assert tried[2]["why"] == ["photo recall dirt 0.850 < 0.900"]
    kept, tried, _ = select_int8(["prohibited", "stage3"], figures_of, params)            # all hold: one attempt
    assert kept == ["prohibited", "stage3"] and len(tried) == 1
    assert select_int8([], figures_of, params)[:2] == ([], [])


def test_paired_timing_alternates_the_two_runs_and_reads_their_fastest():
    import time

    from pipelines.release.quantize import paired_ms

    order = []

    def run(name, seconds):
        def call():
            order.append(name)
            time.sleep(seconds)
        return call

    slow, fast = paired_ms(run("a", 0.004), run("b", 0.001), repeats=5, warmup=1)
    assert order == ["a", "b"] * 6                        # alternated, warm-up included: both see the same load
    assert 4.0 <= slow < 40 and 1.0 <= fast < slow        # the fastest of each, in milliseconds


@pytest.mark.slow
def test_the_reviewer_stage_quantizes_chooses_and_register_remakes_the_same_int8_graphs(trained_project, tmp_path):
    from pipelines.release.export import export_bundle, parity_photos
    from pipelines.release.quantize import STORE, entries
    from pipelines.serve.bundle import read_meta
    from pipelines.serve.models import ReviewerModels

    params = load_params(trained_project / "params.yaml")
    record = json.loads((trained_project / "metrics" / "reviewer.json").read_text())["int8"]
    bundles = {p.name: p for p in (trained_project / "models" / "reviewer" / "bundles").iterdir()}
    units = {u for b in bundles.values() for u, _ in entries(read_meta(b))}
    assert set(record["units"]) == units and any(u.endswith("-stage4") for u in units) and "prohibited" in units
    for unit, r in record["units"].items():                   # measured, and offered exactly when faster enough
        assert r["fp32_ms"] > 0 and r["int8_ms"] > 0 and r["max_abs_diff"] >= 0
        assert r["offered"] == (r["fp32_ms"] >= params.serving.int8.min_speedup * r["int8_ms"])
        assert r["served"] == (unit in record["served"]) and (r["offered"] or not r["served"])
    assert record["served"], "no unit is served as INT8 (the tiny project offers every unit: open_gate)"
    assert record["tried"] and all(t["holds"] == (t["why"] == []) for t in record["tried"])
    assert record["served"] in [t["int8"] for t in record["tried"] if t["holds"]]
    # the real-photo figures of every attempt, on the real training photos: each family measured again only where
    # one of its units changed precision
    assert record["real_photo_views"] == len(params.real_photos.train) * params.serving.int8.real_photo_views
    assert all(set(t["test"]["real_photos"]) == {"manipulation_false_alarms", "manipulation_edit_recall",
                                                  "blur_pooled_spearman", "blur_sharp_flagged", "unknown_sku"}
               for t in record["tried"])
    assert record["real_photo_runs"][0] == ["blur", "manipulation", "sku"]
    # the stage's memo saw the INT8 twins quantized after it was made: the first attempt ran INT8 graphs
    assert len(record["graph_runs"]) >= 2 and record["graph_runs"][1], record["graph_runs"]

    served = ReviewerModels({f: str(p) for f, p in bundles.items()}, threads=1)       # as the stage scored them
    assert {u for u, p in served.precision.items() if p == "int8"} == set(record["served"])
    photos = parity_photos(trained_project, 4)                        # test photos: what the ranges were read for
    fp32 = ReviewerModels({f: str(p) for f, p in bundles.items()}, threads=1, int8=()).outputs(photos)
    int8 = served.outputs(photos)
    quantized = [g for g in int8 if served.precision[g] == "int8"]
    assert quantized and all(not np.array_equal(int8[g], fp32[g]) for g in quantized)
    worst = {g: float(np.abs(int8[g] - fp32[g]).max()) for g in ("blur", "manipulation", "prohibited") if g in quantized}
    assert all(v < 0.25 for v in worst.values()), worst

    # the stage's memo: each set of units answers as a full review with those units would, bit for bit, and a
    # graph runs again only where its precision or that of a trunk stage it reads changed
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.release.reviewer import GraphMemo
    from pipelines.train.review import review

    test = split_frame(versioned_manifest(trained_project), "test")
    memo = GraphMemo(params, bundles, test)
    stage = next(u for u in units if u.endswith("-stage4"))
    for chosen in ([], ["prohibited"], ["prohibited", stage], []):
        full = review(ReviewerModels.as_served({f: str(p) for f, p in bundles.items()}, params, int8=chosen), test,
                      params)
        assert memo.answers(chosen) == full, chosen
    owner = next(f for f, b in bundles.items() if "prohibited" in read_meta(b)["graphs"])
    assert memo.runs[0] == sorted(bundles) and memo.runs[1] == [owner] and len(memo.runs) == 3   # [] again: no run
    metas = {f: read_meta(b) for f, b in bundles.items()}
    reading = {f for f, m in metas.items() if stage in {u for u, _ in entries(m)}}     # on the photos, not the crops
    if any(g.get("crop") for f in reading for g in metas[f]["graphs"].values()):
        reading |= {f for f, m in metas.items() if "yolo" in m}
    assert memo.runs[2] == sorted(reading) and len(reading) < len(bundles)

    # register: the chosen units of this very candidate come back byte for byte, quantized again (no stored copy);
    # another candidate gets none
    family = next(f for f, b in bundles.items() if any(u in record["served"] for u, _ in entries(read_meta(b))))
    assert record["families"][family] == sorted(u for u, _ in entries(read_meta(bundles[family]))
                                                if u in record["served"])
    repo = tmp_path / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    shutil.rmtree(repo / STORE)
    made = export_bundle(family, repo, params, tmp_path / "made")
    for unit, entry in entries(made):
        assert entry.get("precision", "fp32") == ("int8" if unit in record["served"] else "fp32")
        if entry.get("precision") == "int8":
            name = entry["int8"]["file"]
            assert (tmp_path / "made" / name).read_bytes() == (bundles[family] / name).read_bytes()
    files = {entry["int8"]["file"] for unit, entry in entries(made) if unit in record["served"]}
    assert len(list((repo / STORE).iterdir())) == len(files)       # kept for the next run (a stage on the photos and
    #                                                                on the crops: two units, one INT8 file)
    path = repo / "metrics" / f"{family}.json"
    doc = json.loads(path.read_text())
    doc["thresholds"] = {k: 0.5 for k in doc["thresholds"]}          # another candidate: another content hash
    path.write_text(json.dumps(doc))
    other = export_bundle(family, repo, params, tmp_path / "other")
    assert all(entry.get("precision", "fp32") == "fp32" for _, entry in entries(other))


def test_a_quantized_graph_keeps_its_score_tail_in_fp32(tmp_path):
    """Scores far under 1/255 survive quantization: the threshold of a rare defect sits there (dirt's: 0.0009)."""
    import onnx
    import onnxruntime as ort
    import torch

    from pipelines.release.quantize import quantize_graph, score_tail

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 2), torch.nn.Sigmoid()).eval()
    with torch.no_grad():
        net[0].weight.abs_()
        net[4].weight.fill_(1.0)
        net[4].bias.fill_(-8.0)
    x = np.abs(np.random.default_rng(0).normal(size=(32, 3, 16, 16))).astype(np.float32) * 0.1
    x[::2] *= 40                                  # half the photos score near 1, half near 0.0004: the range read
    src, dst = tmp_path / "scorer.onnx", tmp_path / "scorer.int8.onnx"
    torch.onnx.export(net, torch.from_numpy(x[:1]), str(src), input_names=["x"], output_names=["out"],
                      dynamic_axes={"x": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    model = onnx.load(str(src))
    assert sorted(n.op_type for n in model.graph.node if n.name in score_tail(model)) == ["Gemm", "Sigmoid"]

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    fp32 = run(src)
    low = fp32[1::2]
    assert fp32[::2].min() > 0.5 and low.max() < 1 / 510         # under half a step of 1/255
    quantize_graph(src, dst, x)
    int8 = run(dst)[1::2]
    assert (int8 > 0).all() and np.abs(np.log(int8) - np.log(low)).max() < 0.2        # same scores, in log space
    assert {n.op_type for n in onnx.load(str(dst)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    quantize_graph(src, dst, x, scorer=False)                 # quantized through the sigmoid: steps of 1/255
    assert (run(dst)[1::2] == 0).all()
