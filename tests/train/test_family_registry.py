"""The family registry: one place lists the families, each answers what the rest asks, unknown names fail loudly."""

from __future__ import annotations

import pytest
import yaml

from pipelines.params import CHECKS, load_params
from pipelines.release.gate import calibration
from pipelines.train import families

ASKED = ("train", "evaluate", "bundle", "gate_values", "summary")


@pytest.mark.parametrize("name", families.FAMILIES)
def test_every_family_module_answers_what_the_rest_asks(name):
    family = families.get(name)
    missing = [f for f in ASKED if not callable(getattr(family.module, f, None))]
    assert not missing, f"{name} lacks {missing}"


def test_an_unknown_family_fails_loudly_with_the_known_names():
    with pytest.raises(ValueError, match="unknown model family 'sku2'.*detector, sku, blur, prohibited, manipulation"):
        families.get("sku2")


@pytest.mark.slow
def test_every_family_judges_known_checks_and_summarises_its_trained_metrics(trained_project):
    from pipelines.train.evaluate import read_metrics

    for name in families.FAMILIES:
        test = read_metrics(name, trained_project)["test"]
        recalls, auto_pass = families.get(name).gate_values(test)
        assert recalls and {check.split(":")[0] for check in recalls} <= set(CHECKS), (name, recalls)
        assert auto_pass != auto_pass or 0.0 <= auto_pass <= 1.0          # NaN only when nothing was measured
        assert isinstance(families.get(name).summary(test), str)


def test_gate_floors_name_exactly_the_known_checks(tmp_path):
    raw = yaml.safe_load(open("params.yaml"))
    assert set(raw["gate"]["recall_floors"]) == set(CHECKS)
    raw["gate"]["recall_floors"]["centering"] = raw["gate"]["recall_floors"].pop("centring")   # a typo
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"unknown \['centering'\]; missing \['centring'\]"):
        load_params(tmp_path / "params.yaml")


def test_generated_calibration_positives_are_asked_only_of_checks_the_generator_can_draw(tmp_path):
    from pipelines.train.families import detector

    raw = yaml.safe_load(open("params.yaml"))
    assert set(raw["recall_targets"]["extra_positives"]) <= {"manipulation", "unknown_sku", *detector.CHECKS}
    raw["recall_targets"]["extra_positives"]["blur"] = 2000          # the blur label is a score, not a drawn defect
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"extra_positives: no generated positives for \['blur'\]"):
        load_params(tmp_path / "params.yaml")


def test_an_uncalibrated_threshold_fails_the_gate_unless_unmeasured_checks_are_allowed():
    params = load_params("params.yaml")
    assert calibration({"blur": 0.41}, params) == []
    [refused] = calibration({"blur": None}, params)
    assert not refused.passed and refused.name == "calibrated threshold blur" and "flags every photo" in refused.detail
    allowed = params.model_copy(update={"gate": params.gate.model_copy(update={"allow_unmeasured": True})})
    assert calibration({"blur": None}, allowed)[0].passed


def test_every_family_names_its_defects_in_the_whole_reviewers_words():
    from pipelines.release.reviewer import truth
    import pandas as pd

    columns = set(truth(pd.DataFrame(columns=["sku_id", "claimed_sku", "blurred", "blur_dropped", "sticker_missing",
                                              "dirt", "off_centre", "prohibited", "manipulated"]), set(), []).columns)
    named = [d for name in families.FAMILIES for d in families.get(name).defects]
    assert sorted(named) == sorted(set(named)) and set(named) == columns - {"clean"}   # each defect, one family
