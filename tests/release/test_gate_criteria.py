"""The gate's criteria as a table: every refusal and every pass, with the reason it reports, for every family.

``gate.criteria(family, candidate, production, params)`` is a pure function of test metrics and
params.yaml's ``gate`` block. The metrics are built here in each family's own layout (the keys its
``metrics/<family>.json`` holds under ``test``; the last test checks the layouts against the files
the trained tiny project wrote), from one recall per check and the family's auto-pass share.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipelines.params import load_params
from pipelines.release import gate

PARAMS = load_params(Path(__file__).resolve().parents[2] / "params.yaml")      # the real one, not a test copy
CATEGORIES = PARAMS.prohibited.categories
FAMILIES = ("sku", "blur", "detector", "prohibited", "manipulation")
NAN = math.nan


def checks(family: str, categories=CATEGORIES) -> list[str]:
    """The checks the gate judges for ``family``, in the order it reports them."""
    return {"sku": ["sku_mismatch", "unknown_sku"], "blur": ["blur"],
            "detector": ["sticker_missing", "dirt", "centring"],
            "prohibited": [f"prohibited:{c}" for c in categories], "manipulation": ["manipulation"]}[family]


def floor(check: str, params=PARAMS) -> float:
    return params.gate.recall_floors[check.split(":")[0]]


def metrics(family: str, recalls: dict[str, float], auto_pass: float) -> dict:
    """Test metrics in ``family``'s layout; a NaN recall is written as null (no positive on the test split)."""
    r = {c: None if math.isnan(v) else v for c, v in recalls.items()}
    flagged = round(1.0 - auto_pass, 6)
    if family == "sku":
        return {"wrong_claim_recall": r["sku_mismatch"], "outside_catalogue_recall": r["unknown_sku"],
                "auto_pass_share": auto_pass}
    if family == "blur":
        return {"model": {"spearman": 0.9, "blurred": {"recall": r["blur"], "flagged_share": flagged}}}
    if family == "detector":
        return {**{c: {"recall": r[c]} for c in checks("detector")}, "auto_pass_share": auto_pass}
    if family == "prohibited":
        return {"categories": {c: {"recall": r[f"prohibited:{c}"]} for c in CATEGORIES},
                "any": {"flagged_share": flagged}}
    return {"manipulated": {"recall": r["manipulation"], "flagged_share": flagged}}


def at_floors(family: str, plus: float = 0.0) -> dict[str, float]:
    return {c: floor(c) + plus for c in checks(family)}


def by_name(result: list[gate.Criterion]) -> dict[str, gate.Criterion]:
    names = [c.name for c in result]
    assert len(names) == len(set(names)), names
    return dict(zip(names, result))


def refused(result: list[gate.Criterion]) -> dict[str, gate.Criterion]:
    return {c.name: c for c in result if not c.passed}


def gated(family, recalls, auto_pass=0.5, production=None, params=PARAMS):
    prod = None if production is None else metrics(family, *production)
    return gate.criteria(family, metrics(family, recalls, auto_pass), prod, params)


def variant(**gate_changes):
    return PARAMS.model_copy(update={"gate": PARAMS.gate.model_copy(update=gate_changes)})


def test_the_real_params_hold_the_floors_this_table_assumes():
    assert not PARAMS.gate.allow_unmeasured
    assert PARAMS.gate.max_recall_drop == 0.005 and PARAMS.gate.max_auto_pass_drop == 0.02
    for family in FAMILIES:
        for check in checks(family):
            assert 0.5 < floor(check) < 1.0, check          # room below and above every floor


@pytest.mark.parametrize("family", FAMILIES)
def test_every_check_exactly_at_its_floor_passes_and_without_production_only_floors_are_judged(family):
    result = by_name(gated(family, at_floors(family)))

    assert list(result) == [f"recall floor {c}" for c in checks(family)]     # no regression criterion at all
    for check in checks(family):
        c = result[f"recall floor {check}"]
        assert c.passed and c.value == pytest.approx(floor(check)) and c.limit == floor(check)
        assert c.detail == f"recall {floor(check):.3f} >= floor {floor(check)}"


@pytest.mark.parametrize("family", FAMILIES)
def test_one_check_below_its_floor_is_refused_and_named(family):
    for check in checks(family):
        recalls = at_floors(family, plus=0.02)
        recalls[check] = floor(check) - 0.001
        result = gated(family, recalls)

        assert list(refused(result)) == [f"recall floor {check}"], check
        c = refused(result)[f"recall floor {check}"]
        assert c.value == pytest.approx(floor(check) - 0.001) and c.limit == floor(check)
        assert c.detail == f"recall {floor(check) - 0.001:.3f} < floor {floor(check)}"
        assert sum(x.passed for x in result) == len(checks(family)) - 1


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unmeasured_check_is_refused_unless_allowed(family):
    check = checks(family)[-1]
    recalls = {**at_floors(family, plus=0.02), check: NAN}

    strict = gated(family, recalls)
    assert list(refused(strict)) == [f"recall floor {check}"]
    c = refused(strict)[f"recall floor {check}"]
    assert c.value is None and c.limit == floor(check)
    assert c.detail == "no positive on the test split: not measured"

    allowed = by_name(gated(family, recalls, params=variant(allow_unmeasured=True)))
    assert not refused(list(allowed.values()))
    c = allowed[f"recall floor {check}"]
    assert c.passed and c.value is None and c.detail == "no positive on the test split: not measured (allowed)"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_recall_regression_beyond_max_recall_drop_is_refused_within_it_passes(family):
    drop = PARAMS.gate.max_recall_drop
    check = checks(family)[0]
    before = {c: 0.99 for c in checks(family)}
    production = (before, 0.5)

    within = {**before, check: 0.99 - drop}                   # exactly the largest drop allowed
    result = by_name(gated(family, within, production=production))
    assert not refused(list(result.values()))
    c = result[f"no recall regression {check}"]
    assert c.value == pytest.approx(0.99 - drop) and c.limit == pytest.approx(0.99 - drop)
    assert c.detail == f"recall {0.99 - drop:.3f} vs production 0.990 (max drop {drop})"
    assert [n for n in result if n.startswith("no recall regression")] == [f"no recall regression {c}"
                                                                             for c in checks(family)]

    beyond = {**before, check: 0.99 - drop - 0.002}           # above its floor, but lower than production allows
    result = gated(family, beyond, production=production)
    assert list(refused(result)) == [f"no recall regression {check}"]
    c = refused(result)[f"no recall regression {check}"]
    assert c.value == pytest.approx(0.983) and c.detail == f"recall 0.983 vs production 0.990 (max drop {drop})"
    assert by_name(result)[f"recall floor {check}"].passed


@pytest.mark.parametrize("family", FAMILIES)
def test_an_auto_pass_drop_beyond_max_auto_pass_drop_is_refused_within_it_passes(family):
    drop = PARAMS.gate.max_auto_pass_drop
    recalls = at_floors(family, plus=0.02)
    production = (recalls, 0.6)

    result = by_name(gated(family, recalls, auto_pass=0.6 - drop, production=production))
    c = result["no auto-pass regression"]
    assert not refused(list(result.values())) and c.limit == pytest.approx(0.6 - drop)
    assert c.detail == f"auto-pass share {0.6 - drop:.3f} vs production 0.600 (max drop {drop})"

    result = gated(family, recalls, auto_pass=0.6 - drop - 0.01, production=production)
    assert list(refused(result)) == ["no auto-pass regression"]
    c = refused(result)["no auto-pass regression"]
    assert c.value == pytest.approx(0.57) and c.limit == pytest.approx(0.58)
    assert c.detail == f"auto-pass share 0.570 vs production 0.600 (max drop {drop})"

    better = by_name(gated(family, recalls, auto_pass=0.9, production=production))
    assert better["no auto-pass regression"].passed                # more auto-pass than production is never refused


@pytest.mark.parametrize("family", FAMILIES)
def test_a_check_unmeasured_in_production_or_in_the_candidate_has_no_regression_criterion(family):
    check = checks(family)[0]
    before = {**{c: 0.99 for c in checks(family)}, check: NAN}
    result = by_name(gated(family, {c: 0.99 for c in checks(family)}, production=(before, 0.5)))
    assert f"no recall regression {check}" not in result and not refused(list(result.values()))
    assert len([n for n in result if n.startswith("no recall regression")]) == len(checks(family)) - 1

    allowed = variant(allow_unmeasured=True)
    now = {**{c: 0.99 for c in checks(family)}, check: NAN}
    result = by_name(gated(family, now, production=({c: 0.99 for c in checks(family)}, 0.5), params=allowed))
    assert f"no recall regression {check}" not in result and result[f"recall floor {check}"].passed


THRESHOLDS = {"sku": ["margin", "similarity"], "blur": ["blur"], "detector": ["sticker_missing", "dirt"],
              "prohibited": list(CATEGORIES), "manipulation": ["manipulation"]}     # metrics/<family>.json "thresholds"


@pytest.mark.parametrize("family", FAMILIES)
def test_an_uncalibrated_threshold_is_refused_unless_allowed_and_a_calibrated_one_is_no_criterion(family):
    names = THRESHOLDS[family]
    assert gate.calibration({n: 0.5 for n in names}, PARAMS) == []
    uncalibrated = {**{n: 0.5 for n in names}, names[-1]: None}       # no positive on validation

    (c,) = gate.calibration(uncalibrated, PARAMS)
    assert c.name == f"calibrated threshold {names[-1]}" and not c.passed and c.value is None and c.limit is None
    assert c.detail == "no positive on validation: the check flags every photo"
    (c,) = gate.calibration(uncalibrated, variant(allow_unmeasured=True))
    assert c.passed and c.detail == "no positive on validation: the check flags every photo (allowed)"


def test_every_reason_at_once_is_reported():
    """One candidate under a floor, unmeasured, regressed and with less auto-pass: four refusals, each named."""
    recalls = {"sticker_missing": 0.80, "dirt": NAN, "centring": 0.96}
    production = ({"sticker_missing": 0.97, "dirt": 0.95, "centring": 0.99}, 0.70)
    result = gated("detector", recalls, auto_pass=0.60, production=production)
    assert sorted(refused(result)) == sorted(["recall floor sticker_missing", "recall floor dirt",
                                              "no recall regression sticker_missing", "no recall regression centring",
                                              "no auto-pass regression"])
    assert by_name(result)["recall floor centring"].passed


def test_a_raised_floor_in_params_refuses_what_the_real_floor_passes():
    recalls = at_floors("blur", plus=0.01)
    assert not refused(gated("blur", recalls))
    stricter = variant(recall_floors={**PARAMS.gate.recall_floors, "blur": 0.99})
    assert list(refused(gated("blur", recalls, params=stricter))) == ["recall floor blur"]


def test_an_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown model family 'colour'"):
        gate.criteria("colour", {}, None, PARAMS)


@pytest.mark.slow
def test_the_table_layouts_are_those_of_the_metrics_the_families_write(trained_project):
    """The trained tiny project's metrics/<family>.json give the gate the same checks this table builds."""
    from pipelines.train.evaluate import read_metrics

    params = load_params(trained_project / "params.yaml")      # the tiny projects train fewer categories
    for family in FAMILIES:
        expected = list(params.prohibited.categories) if family == "prohibited" else THRESHOLDS[family]
        assert list(read_metrics(family, trained_project)["thresholds"]) == expected, family
        real = gate.criteria(family, read_metrics(family, trained_project)["test"], None, params)
        assert [c.name for c in real] == [f"recall floor {c}" for c in checks(family, params.prohibited.categories)], family
        twice = gate.criteria(family, read_metrics(family, trained_project)["test"],
                              read_metrics(family, trained_project)["test"], params)
        regression = [c for c in twice if c.name.startswith("no ")]
        assert regression and all(c.passed for c in regression), family       # the same model never regresses


def test_unknown_sku_is_judged_on_the_test_splits_outside_catalogue_photos_pooled_with_the_generated_ones():
    at = floor("unknown_sku")
    test = {"wrong_claim_recall": 0.99, "outside_catalogue_recall": 54 / 57, "auto_pass_share": 0.5}
    alone = by_name(gate.criteria("sku", test, None, PARAMS))["recall floor unknown_sku"]
    assert not alone.passed and alone.value == round(54 / 57, 4)       # 57 photos: a third miss is under the floor
    pooled = {**test, "generated_outside_catalogue_recall": 0.995, "generated_outside_catalogue_photos": 1000,
              "outside_catalogue_recall_pooled": (54 + 995) / 1057, "outside_catalogue_photos_pooled": 1057}
    judged = by_name(gate.criteria("sku", pooled, None, PARAMS))["recall floor unknown_sku"]
    assert judged.passed and judged.value == round(1049 / 1057, 4) and judged.limit == at
    worse = {**pooled, "outside_catalogue_recall_pooled": at - 0.001}      # the pooled figure under it still refuses
    assert not by_name(gate.criteria("sku", worse, None, PARAMS))["recall floor unknown_sku"].passed
    assert PARAMS.gate.outside_catalogue_photos >= 1000                  # the default data judges it on the pool


@pytest.mark.parametrize("defect, check", [("blur", "blur"), ("off_centre", "centring"), ("wrong_claim", "sku_mismatch"),
                                           ("outside_catalogue", "unknown_sku"), ("prohibited:cash", "prohibited")])
def test_the_whole_reviewers_photo_recall_is_held_to_the_defects_floor(defect, check):
    at = PARAMS.gate.recall_floors[check]
    below = gate.reviewer_criteria({"test": {"clean_auto_pass": 0.3, f"photo_recall.{defect}": at - 0.001}}, None, PARAMS)
    assert [(c.name, c.passed, c.limit) for c in below] == [(f"reviewer photo recall {defect}", False, at)]
    assert all(c.passed for c in gate.reviewer_criteria({"test": {f"photo_recall.{defect}": at}}, None, PARAMS))
    unmeasured = gate.reviewer_criteria({"test": {f"photo_recall.{defect}": None}}, None, PARAMS)
    assert [c.passed for c in unmeasured] == [PARAMS.gate.allow_unmeasured] and "not measured" in unmeasured[0].detail


def test_the_whole_reviewers_outside_catalogue_recall_is_judged_pooled_with_the_generated_photos():
    at = floor("unknown_sku")
    alone = {"photo_recall.outside_catalogue": 54 / 57}                 # a third miss among 57: under the floor
    assert not by_name(gate.reviewer_criteria({"test": alone}, None, PARAMS))[
        "reviewer photo recall outside_catalogue"].passed
    pooled = {**alone, "photo_recall_pooled.outside_catalogue": 1049 / 1057, "photos_pooled.outside_catalogue": 1057}
    judged = by_name(gate.reviewer_criteria({"test": pooled}, None, PARAMS))["reviewer photo recall outside_catalogue"]
    assert judged.passed and judged.value == round(1049 / 1057, 4) and judged.limit == at
    assert "1057" in judged.detail and "test split alone 0.947" in judged.detail
    worse = {**pooled, "photo_recall_pooled.outside_catalogue": at - 0.001}
    assert not by_name(gate.reviewer_criteria({"test": worse}, None, PARAMS))[
        "reviewer photo recall outside_catalogue"].passed


def test_the_whole_reviewers_clean_auto_pass_may_not_fall_below_productions_by_more_than_the_tolerance():
    drop = PARAMS.gate.max_reviewer_auto_pass_drop
    production = {"test": {"clean_auto_pass": 0.40}}
    ok = gate.reviewer_criteria({"test": {"clean_auto_pass": 0.40 - drop}}, production, PARAMS)
    worse = gate.reviewer_criteria({"test": {"clean_auto_pass": 0.40 - drop - 0.001}}, production, PARAMS)
    assert [(c.name, c.passed) for c in ok] == [("no reviewer clean auto-pass regression", True)]
    assert [(c.name, c.passed) for c in worse] == [("no reviewer clean auto-pass regression", False)]
    assert "0.379 vs 0.400" in worse[0].detail
    assert gate.reviewer_criteria({"test": {"clean_auto_pass": 0.1}}, None, PARAMS) == []     # nothing recorded
    assert gate.reviewer_criteria(None, production, PARAMS) == []                             # no reviewer stage yet


# --- the candidates on real photos (metrics/real_photos.json) against gate.real_photos -----------------------------

STRICT = PARAMS.model_copy(update={"gate": PARAMS.gate.model_copy(update={
    "real_photos": PARAMS.gate.real_photos.model_copy(update={
        "manipulation_false_alarms": 0.10, "manipulation_edit_recall": 0.90, "blur_pooled_spearman": 0.90,
        "blur_sharp_flagged": 0.05, "unknown_sku": 0.95})})})
REAL = {"manipulation": {"false_alarm_rate": 0.08, "edit_recall": 0.93},
        "blur": {"pooled_spearman": 0.92, "sharp_flagged": 0.0}, "sku": {"unknown_sku_share": 0.97}}


@pytest.mark.parametrize("family, section, key, bad, criterion", [
    ("manipulation", "manipulation", "false_alarm_rate", 0.11, "real photos manipulation false_alarm_rate"),
    ("manipulation", "manipulation", "edit_recall", 0.85, "real photos manipulation edit_recall"),
    ("blur", "blur", "pooled_spearman", 0.59, "real photos blur pooled_spearman"),
    ("blur", "blur", "sharp_flagged", 0.15, "real photos blur sharp_flagged"),
    ("sku", "sku", "unknown_sku_share", 0.5, "real photos sku unknown_sku_share"),
])
def test_a_real_photo_figure_beyond_its_limit_is_refused_within_it_passes(family, section, key, bad, criterion):
    passing = by_name(gate.real_photo_criteria(family, REAL, STRICT))
    assert criterion in passing and all(c.passed for c in passing.values())
    worse = {**REAL, section: {**REAL[section], key: bad}}
    result = by_name(gate.real_photo_criteria(family, worse, STRICT))
    assert [n for n, c in result.items() if not c.passed] == [criterion]
    assert "not met" in result[criterion].detail and result[criterion].value == bad


@pytest.mark.parametrize("family", ["sku", "blur", "manipulation"])
def test_unmeasured_real_photo_figures_are_refused_unless_allowed(family):
    strict = by_name(gate.real_photo_criteria(family, None, STRICT))
    assert strict and not any(c.passed for c in strict.values())
    assert all("not measured" in c.detail for c in strict.values())
    allowed = STRICT.model_copy(update={"gate": STRICT.gate.model_copy(update={"allow_unmeasured": True})})
    assert all(c.passed for c in gate.real_photo_criteria(family, {}, allowed))


def test_real_photo_figures_of_another_model_are_not_this_candidates():
    measured = {**REAL, "candidates": {"blur": "aaaa", "manipulation": "bbbb", "sku": "cccc"}}
    assert all(c.passed for c in gate.real_photo_criteria("blur", measured, STRICT, candidate="aaaa"))
    other = gate.real_photo_criteria("blur", measured, STRICT, candidate="ffff")
    assert other and all(not c.passed and c.value is None and "measured on aaaa" in c.detail for c in other)


def test_families_without_real_photo_figures_have_no_such_criterion():
    assert gate.real_photo_criteria("detector", REAL, STRICT) == [] == gate.real_photo_criteria("prohibited", REAL, STRICT)
