"""`reviewops policy` proposals (pipelines/release/policy.py) on a scores frame decided by decide(): the threshold
chosen for a recall target, its effect as operating_point.curve computes it, the floor refusal, the effect page."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.params import load_params
from pipelines.release import operating_point as op
from pipelines.release.policy import (BelowFloor, PolicyError, check_names, context, locate, propose, rebase,
                                      with_threshold, write_effect_report)
from tests.release.test_operating_point import FLOORS, METAS, scored


@pytest.fixture(scope="module")
def params():
    p = load_params()
    return p.model_copy(update={"gate": p.gate.model_copy(update={"recall_floors": {**p.gate.recall_floors, **FLOORS}})})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return scored(600, seed=1)


def ctx_of(params, frame, check, metas=METAS):
    return context(".", params, check, metas=metas, scores=frame)


def swept_recall(check: op.Check, part: pd.DataFrame, metas: dict, t: float) -> float:
    return float(op.curve(check, part, metas, [t]).iloc[0]["photo_recall"])


@pytest.mark.parametrize("name", ["blur", "dirt", "prohibited:cash", "manipulation", "sku"])
def test_a_recall_target_picks_the_highest_threshold_reaching_it_on_validation(params, frame, name):
    ctx = ctx_of(params, frame, name)
    val = frame[frame["split"] == "val"]
    c = ctx.check
    base = swept_recall(c, val, METAS, -math.inf if not c.sku else math.inf)    # every eligible photo flagged
    target = round(min(0.9, base - 0.02), 3)
    p = propose(".", params, name, recall=target, force=True, ctx=ctx)
    t = p["new"]
    assert swept_recall(c, val, METAS, t) >= target
    seen = sorted({float(v) for v in val[c.score].dropna()})
    if c.sku:                      # alarms at or below t: every lower observed score misses the target
        assert all(swept_recall(c, val, METAS, s) < target for s in seen if s < t)
    else:                          # flags at or above t: every higher observed score misses the target
        assert all(swept_recall(c, val, METAS, s) < target for s in seen if s > t)
    assert p["effect"]["val"]["proposed"]["photo_recall"] == pytest.approx(swept_recall(c, val, METAS, t))
    assert p["chosen_on"] == "val" and p["recall_target"] == target


def test_the_effect_is_the_operating_curve_now_and_at_the_proposal(params, frame):
    ctx = ctx_of(params, frame, "blur")
    p = propose(".", params, "blur", threshold=0.42, force=True, ctx=ctx)
    assert p["old"] == 0.5 and p["new"] == 0.42 and p["family"] == "blur" and p["key"] == "blur"
    c = ctx.check
    for split, part in frame.groupby("split"):
        e = p["effect"][split]
        ref = op.curve(c, part, METAS, [0.5, 0.42])
        for i, when in enumerate(("now", "proposed")):
            assert e[when]["clean_auto_pass"] == pytest.approx(ref["clean_auto_pass"][i])
            assert e[when]["photo_recall"] == pytest.approx(ref["photo_recall"][i])
        # the whole reviewer's auto-pass: no other reason and the check passes it
        other = part["reasons"].map(lambda r: any(x != "blur" for x in r)).to_numpy()
        flagged = part["blur_score"].to_numpy() >= 0.42
        assert e["proposed"]["auto_pass"] == pytest.approx((~other & ~flagged).mean())
        assert e["now"]["auto_pass"] == pytest.approx((part["decision"] == "auto_pass").mean())   # the recorded answers
        assert e["now"]["clean_auto_pass"] == pytest.approx((part.loc[part["truth.clean"], "decision"] == "auto_pass").mean())
    assert p["policy_version"]["now"] != p["policy_version"]["proposed"]
    lower = p["effect"]["test"]
    assert lower["proposed"]["photo_recall"] >= lower["now"]["photo_recall"]
    assert lower["proposed"]["clean_auto_pass"] <= lower["now"]["clean_auto_pass"]


def test_a_threshold_below_the_floor_is_refused_unless_forced(params, frame):
    ctx = ctx_of(params, frame, "blur")
    with pytest.raises(BelowFloor, match=r"test photo recall of blur .* below its gate floor 0.95"):
        propose(".", params, "blur", threshold=0.95, ctx=ctx)
    forced = propose(".", params, "blur", threshold=0.95, force=True, ctx=ctx)
    assert forced["below_floor"] == ["blur"] and forced["forced"]
    with pytest.raises(PolicyError, match="one of a threshold or a recall"):
        propose(".", params, "blur", ctx=ctx)
    with pytest.raises(PolicyError, match="unknown check"):
        locate("sharpness")


def test_the_sku_margin_moves_the_sku_alarm_with_the_similarity_held(params, frame):
    ctx = ctx_of(params, frame, "sku_margin")
    assert ctx.check.name == "sku" and ctx.key == "margin"
    p = propose(".", params, "sku_margin", threshold=0.05, force=True, ctx=ctx)
    moved = with_threshold(METAS, "sku", "margin", 0.05)
    for split, part in frame.groupby("split"):
        ref = op.curve(ctx.check, part, moved, [0.5]).iloc[0]
        assert p["effect"][split]["proposed"]["photo_recall"] == pytest.approx(ref["photo_recall"])
        assert p["effect"][split]["proposed"]["photo_recall"] >= p["effect"][split]["now"]["photo_recall"]
    chosen = propose(".", params, "sku_margin", recall=0.9, force=True, ctx=ctx)["new"]
    val = frame[frame["split"] == "val"]
    at = lambda m: float(op.curve(ctx.check, val, with_threshold(METAS, "sku", "margin", m), [0.5]).iloc[0]["photo_recall"])
    assert at(chosen) >= 0.9 and all(at(m) < 0.9 for m in val["sku_margin"].dropna() if m < chosen)


def test_rebase_redecides_the_scores_with_another_policy(params, frame):
    moved = with_threshold(METAS, "detector", "dirt", 0.3)
    redecided = rebase(frame, moved, FLOORS)
    dirt = next(c for c in op.checks(frame, moved, FLOORS) if c.name == "dirt")
    op.verify(dirt, redecided, moved)                     # the reasons are the new policy's
    for c in op.checks(frame, METAS, FLOORS):
        if c.name != "dirt":
            op.verify(c, redecided, METAS)                # the others untouched
    assert (redecided["decision"] == "manual_review").sum() > (frame["decision"] == "manual_review").sum()
    assert check_names("prohibited", METAS["prohibited"]) == [("prohibited:cash", "cash"), ("prohibited:knife", "knife")]
    assert check_names("sku", METAS["sku"]) == [("sku", "similarity"), ("sku_margin", "margin")]


def test_the_effect_page_draws_both_points(params, frame, tmp_path):
    ctx = ctx_of(params, frame, "blur")
    p = propose(".", params, "blur", recall=0.9, force=True, ctx=ctx)
    page = write_effect_report(tmp_path, params, p, tmp_path / "p.html", ctx=ctx).read_text()
    assert "Policy proposal: blur" in page and page.count("data:image/png;base64,") == 1
    assert "recall blur" in page and "chosen on validation" in page
