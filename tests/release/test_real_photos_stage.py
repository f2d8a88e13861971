"""The real-photo check stage (pipelines/release/real_photos.py) on the trained tiny project: every photo it
counts, each figure recomputed from the per-photo scores it keeps, and the gate reading it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.params import load_params
from pipelines.release import gate
from pipelines.serve.decision import flagged

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_the_stage_scores_every_view_edit_and_blur_level_and_its_figures_follow_the_scores(trained_project):
    params = load_params(trained_project / "params.yaml")
    rp = params.real_photos
    m = json.loads((trained_project / "metrics" / "real_photos.json").read_text())
    scores = pd.read_csv(trained_project / "plots" / "real_photos" / "scores.csv")
    views = len(rp.checks) * rp.check_views
    assert m["views"] == views and m["photos"] == rp.checks

    man = scores[scores["check"] == "manipulation"]
    unedited, edited = man[man["kind"] == "none"], man[man["kind"] != "none"]
    assert m["manipulation"]["unedited"] == len(unedited) == views
    assert views * rp.edits_per_view * 0.9 <= m["manipulation"]["edited"] == len(edited) <= views * rp.edits_per_view
    thr = m["manipulation"]["threshold"]
    assert (man["flagged"] == man["score"].map(lambda s: flagged(s, thr))).all()      # the one decision rule
    assert m["manipulation"]["false_alarm_rate"] == pytest.approx(unedited["flagged"].mean(), abs=1e-4)
    assert m["manipulation"]["edit_recall"] == pytest.approx(edited["flagged"].mean(), abs=1e-4)
    assert set(m["manipulation"]["edit_recall_by_kind"]) == set(edited["kind"]) == {
        "splice", "clone", "watermark", "synthetic", "inpaint"}
    above = (edited["score"].to_numpy()[:, None] > unedited["score"].to_numpy()[None, :]).mean()
    ties = (edited["score"].to_numpy()[:, None] == unedited["score"].to_numpy()[None, :]).mean()
    assert m["manipulation"]["roc_auc"] == pytest.approx(above + ties / 2, abs=1e-4)   # pairs ordered right
    assert m["manipulation"]["median_score_unedited_by_photo"] == pytest.approx(
        unedited.groupby("photo")["score"].median().to_dict(), abs=1e-4)
    assert set(m["manipulation"]["median_score_unedited_by_photo"]) == set(rp.checks)

    blur = scores[scores["check"] == "blur"]
    assert len(blur) == views * (len(rp.gaussian_sigmas) + len(rp.motion_lengths))
    sharp = blur[(blur["kind"] == "gaussian") & (blur["strength"] == 0)]
    assert len(sharp) == views
    soft = sharp["photo"].isin(rp.soft_focus)        # views not all in focus: in the series, not counted as sharp
    assert rp.soft_focus and soft.any() and not soft.all()
    assert m["blur"]["sharp"] == (~soft).sum() and m["blur"]["soft_focus"]["views"] == soft.sum()
    assert m["blur"]["sharp_flagged"] == pytest.approx(sharp.loc[~soft, "flagged"].mean(), abs=1e-4)
    assert m["blur"]["soft_focus"]["flagged"] == pytest.approx(sharp.loc[soft, "flagged"].mean(), abs=1e-4)
    assert m["blur"]["sharp_flagged_all_views"] == pytest.approx(sharp["flagged"].mean(), abs=1e-4)
    g = m["blur"]["gaussian"]
    assert set(g["model"]["mean_by_strength"]) == {str(float(s)) for s in rp.gaussian_sigmas}
    assert m["blur"]["pooled_spearman"] == g["model"]["pooled_spearman"]
    # the Laplacian baseline orders a blur series of real photos almost perfectly: the series is what it says
    assert g["laplacian_baseline"]["per_photo_spearman"] > 0.95
    assert g["laplacian_baseline"]["mean_by_strength"]["8.0"] > g["laplacian_baseline"]["mean_by_strength"]["0.0"]

    sku = scores[scores["check"] == "sku"]
    assert len(sku) == views and m["sku"]["unknown_sku_share"] == pytest.approx(sku["flagged"].mean(), abs=1e-4)
    assert (sku["flagged"] <= sku["any_alarm"].astype(bool)).all()
    for name in ("blur_gaussian.csv", "blur_motion.csv"):
        assert (trained_project / "plots" / "real_photos" / name).is_file()

    # the gate holds each of the three families' candidates to gate.real_photos with these very figures
    from pipelines.release.registry import content_hash

    for family, criteria in gate.REAL_PHOTO_CRITERIA.items():
        assert m["candidates"][family] == content_hash(family, trained_project)
        judged = gate.real_photo_criteria(family, m, params, content_hash(family, trained_project))
        assert [c.value for c in judged] == [pytest.approx(m[s][k], abs=1e-4) for s, k, *_ in criteria]


def test_without_the_reviewer_stages_bundles_the_command_says_what_to_run(trained_project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(trained_project, repo, symlinks=True, ignore=shutil.ignore_patterns("bundles"))
    done = subprocess.run([str(BIN / "reviewops"), "real-photos"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 2 and "run the reviewer stage first" in done.stderr + done.stdout
    assert (repo / "metrics" / "real_photos.json").read_text() == \
        (trained_project / "metrics" / "real_photos.json").read_text()                 # the old figures stay


def test_each_family_on_its_own_graphs_gives_the_figures_of_the_models_together(trained_project):
    """measure() with one ReviewerModels per family (what the stage and the INT8 choice run) answers exactly as the
    three families loaded together: each check's reason depends on its own graph only."""
    from pipelines.release.real_photos import BUNDLES, FAMILIES, measure, photo_set
    from pipelines.serve.models import ReviewerModels

    params = load_params(trained_project / "params.yaml")
    bundles = {f: str(trained_project / BUNDLES / f) for f in FAMILIES}
    photos = photo_set(params)
    together, rows = measure(ReviewerModels(bundles, threads=params.train.threads), params, photos)
    alone, rows_alone = measure({f: ReviewerModels({f: p}, threads=params.train.threads) for f, p in bundles.items()},
                                params, photos)
    assert alone == together
    pd.testing.assert_frame_equal(rows_alone, rows)
    stage = json.loads((trained_project / "metrics" / "real_photos.json").read_text())
    assert {f: stage[f] for f in FAMILIES} == {f: alone[f] for f in FAMILIES}


def test_the_int8_choice_measures_the_real_training_photos_once_per_family_and_precision(trained_project):
    """TrainingPhotoMemo: the gate's real-photo figures on views of the real *training* photos (not the checks), as
    measure() gives them with those units as INT8; a family runs again only where one of its units changed."""
    from pipelines.release.quantize import entries
    from pipelines.release.real_photos import (BUNDLES, FAMILIES, TrainingPhotoMemo, gate_figures, measure,
                                               photo_set)
    from pipelines.serve.bundle import read_meta
    from pipelines.serve.models import ReviewerModels

    params = load_params(trained_project / "params.yaml")
    bundles = {f: trained_project / BUNDLES / f for f in FAMILIES}
    memo = TrainingPhotoMemo(params, bundles)
    assert {ref for ref, *_ in memo.photos.base} == set(params.real_photos.train)
    assert not {ref for ref, *_ in memo.photos.base} & set(params.real_photos.checks)
    assert len(memo.photos.base) == len(params.real_photos.train) * params.serving.int8.real_photo_views
    photos = photo_set(params, params.real_photos.train, params.serving.int8.real_photo_views)
    units = {f: [u for u, _ in entries(read_meta(bundles[f]))] for f in FAMILIES}
    for chosen in ([], ["manipulation"], []):
        models = ReviewerModels.as_served({f: str(p) for f, p in bundles.items()}, params, int8=chosen)
        expected = {k: v for k, v in gate_figures(measure(models, params, photos, soft_focus=())[0]).items()
                    if v is not None}
        assert memo.figures(chosen) == expected, chosen
    assert "manipulation" in units["manipulation"] and all("manipulation" not in units[f] for f in ("blur", "sku"))
    assert memo.runs == [["blur", "manipulation", "sku"], ["manipulation"], []]
