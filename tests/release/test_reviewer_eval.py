"""The whole reviewer evaluated (pipelines/release/reviewer.py): ground truth per defect, the figures on a split,
and the stage on the trained tiny project, whose thresholds the figures must follow."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from pipelines.release.reviewer import right_reason, split_metrics, truth


def manifest(**over) -> pd.DataFrame:
    base = {"sku_id": "a", "claimed_sku": "a", "blurred": False, "blur_dropped": False, "sticker_missing": False,
            "dirt": False, "off_centre": False, "prohibited": [], "manipulated": False}
    rows = [{**base, **{k: v[i] for k, v in over.items() if v[i] is not None}} for i in range(len(next(iter(over.values()))))]
    return pd.DataFrame(rows)


def test_truth_gives_each_defect_its_column_and_clean_means_none_of_them():
    df = manifest(sku_id=["a", "a", "zz", "none", "a", "a", "b", "a"],
                  claimed_sku=["a", "b", "zz", "none", "a", "a", "b", "a"],
                  blurred=[False, False, False, False, True, True, False, False],
                  blur_dropped=[False, False, False, False, False, True, False, False],
                  prohibited=[[], [], [], ["cash"], [], [], ["knife", "cash"], []],
                  manipulated=[False, False, False, False, False, False, False, True])
    t = truth(df, gallery={"a", "b"}, categories=["cash", "knife"])
    assert t["clean"].tolist() == [True, False, False, False, False, False, False, False]
    assert t["wrong_claim"].tolist() == [False, True, False, False, False, False, False, False]
    assert t["outside_catalogue"].tolist() == [False, False, True, False, False, False, False, False]
    assert t["blur"].tolist() == [False, False, False, False, True, False, False, False]   # contradictory votes: neither
    assert t["prohibited:cash"].tolist() == [False, False, False, True, False, False, True, False]
    assert t["prohibited:knife"].sum() == 1 and t["prohibited"].sum() == 2
    assert t["manipulation"].tolist()[-1] and not t["off_centre"].any()


def test_split_figures_count_what_went_to_a_person_and_why():
    frame = pd.DataFrame({
        "decision": ["auto_pass", "manual_review", "manual_review", "manual_review", "auto_pass"],
        "reasons": [[], ["dirt"], ["blur"], ["blur", "sku_mismatch"], []],
        "truth.clean": [True, True, False, False, False],
        "truth.blur": [False, False, True, False, True],
        "truth.wrong_claim": [False, False, False, True, False],
    })
    m = split_metrics(frame, ["blur", "wrong_claim"])
    assert m["n"] == 5 and m["clean"] == 2 and m["clean_auto_pass"] == 0.5 and m["auto_pass"] == 0.4
    assert m["photo_recall"] == {"blur": 0.5, "wrong_claim": 1.0}
    assert m["reason_recall"] == {"blur": 0.5, "wrong_claim": 1.0} and m["positives"] == {"blur": 2, "wrong_claim": 1}
    assert m["clean_flagged_by"] == {"dirt": 0.5}
    assert right_reason("prohibited", ["prohibited:cash"]) and not right_reason("dirt", ["blur"])
    assert right_reason("outside_catalogue", ["unknown_sku"]) and right_reason("wrong_claim", ["sku_mismatch"])


@pytest.mark.slow
def test_the_stage_measures_every_defect_on_both_splits_and_follows_the_thresholds(trained_project, tmp_path):
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.params import load_params
    from pipelines.release.reviewer import evaluate_reviewer, reviewer_figures

    metrics = json.loads((trained_project / "metrics" / "reviewer.json").read_text())
    scores = pd.read_parquet(trained_project / "models" / "reviewer" / "scores.parquet")
    params = load_params(trained_project / "params.yaml")
    manifest_ = versioned_manifest(trained_project)
    defects = {"blur", "sticker_missing", "dirt", "off_centre", "prohibited", "manipulation", "wrong_claim",
               "outside_catalogue", *(f"prohibited:{c}" for c in params.prohibited.categories)}
    live_n = params.live_mix.n[params.train.profile]
    assert metrics["live_mix_auto_pass"] == metrics["live_mix"]["auto_pass"] and metrics["live_mix"]["n"] == live_n
    sizes = {"val": len(split_frame(manifest_, "val")), "test": len(split_frame(manifest_, "test")), "live_mix": live_n}
    for split in ("val", "test", "live_mix"):
        m = metrics[split]
        assert m["n"] == sizes[split] == int((scores["split"] == split).sum())
        assert set(m["photo_recall"]) == set(m["reason_recall"]) == set(m["positives"]) == defects
        rows = scores[scores["split"] == split]
        clean = rows[rows["truth.clean"]]
        assert m["clean"] == len(clean) > 0
        assert m["clean_auto_pass"] == pytest.approx((clean["decision"] == "auto_pass").mean(), abs=1e-6)
        for d in defects:
            if m["positives"][d]:
                assert m["reason_recall"][d] <= m["photo_recall"][d], d
        assert (rows["decision"] == "auto_pass").eq(rows["reasons"].map(len) == 0).all()
    # the gate's generated outside-catalogue photos (capped by the tiny profile), pooled with the test split's
    generated, test = metrics["test"]["generated_outside_catalogue"], metrics["test"]
    assert 0 < generated["photos"] <= min(params.gate.outside_catalogue_photos, params.train.caps.extra_photos)
    assert generated["reason_recall"] <= generated["photo_recall"]
    n_test = test["positives"]["outside_catalogue"]
    assert generated["photos_pooled"] == generated["photos"] + n_test
    assert generated["photo_recall_pooled"] == pytest.approx(
        (generated["photo_recall"] * generated["photos"] + (test["photo_recall"]["outside_catalogue"] or 0) * n_test)
        / generated["photos_pooled"], abs=1e-5)
    shown = reviewer_figures("sku", trained_project)["test"]
    assert shown["photo_recall_pooled.outside_catalogue"] == generated["photo_recall_pooled"]
    assert shown["photo_recall.outside_catalogue"] == test["photo_recall"]["outside_catalogue"]
    assert "photo_recall_pooled.outside_catalogue" not in reviewer_figures("blur", trained_project)["test"]
    # blur's threshold raised past every score: no photo goes to a person for blur any more
    repo = tmp_path / "repo"
    shutil.copytree(trained_project, repo, symlinks=True)
    path = repo / "metrics" / "blur.json"
    doc = json.loads(path.read_text())
    doc["thresholds"]["blur"] = 2.0
    path.write_text(json.dumps(doc))
    after = evaluate_reviewer(repo, params)
    for split in ("val", "test", "live_mix"):
        assert after[split]["reason_recall"]["blur"] in (0.0, None)
        assert "blur" not in after[split]["clean_flagged_by"]
        assert after[split]["clean_auto_pass"] >= metrics[split]["clean_auto_pass"]


@pytest.mark.slow
def test_the_gate_report_shows_the_whole_reviewers_figures_on_the_familys_defects(trained_project):
    from pipelines.release.gate import GateResult, markdown, reviewer_figures
    from pipelines.train.families import FAMILIES, get

    metrics = json.loads((trained_project / "metrics" / "reviewer.json").read_text())
    for family in FAMILIES:
        shown = reviewer_figures(family, trained_project)
        assert set(shown) == {"test", "live_mix"}
        for split, figures in shown.items():
            assert figures["clean_auto_pass"] == metrics[split]["clean_auto_pass"]
            recalls = {k.removeprefix("photo_recall.") for k in figures if k.startswith("photo_recall.")}
            assert recalls and all(r in get(family).defects or r.split(":")[0] in get(family).defects for r in recalls)
    assert {"photo_recall.prohibited", "photo_recall.prohibited:cash"} <= set(reviewer_figures("prohibited", trained_project)["test"])
    page = markdown(GateResult("detector", "refused", "x", None, None, reviewer=reviewer_figures("detector", trained_project)))
    assert "## The whole reviewer with every candidate" in page and "| photo_recall.dirt |" in page
    assert reviewer_figures("blur", trained_project.parent / "nowhere") is None
