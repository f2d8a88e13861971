"""Real photographs (pipelines/data/real_photos.py): the two sets kept apart, the training samples they give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.data import real_photos as rp
from pipelines.params import ParamsError, load_params

PROJECT = Path(__file__).resolve().parents[2]
PARAMS = load_params(PROJECT / "params.yaml")


def test_every_named_photo_is_on_this_machine_and_decodes():
    for ref in PARAMS.real_photos.train + PARAMS.real_photos.checks:
        img = rp.load(ref)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256, ref
    with pytest.raises(rp.MissingPhoto, match="no-such"):
        rp.path_of("mate:no-such.jpg")
    with pytest.raises(ValueError, match="<source>:<name>"):
        rp.path_of("flower.jpg")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["train"].append(r["checks"][0]), "in both train and checks"),
    (lambda r: r["checks"].append("skimage:coffee.png"), "generator material as a check"),
    (lambda r: r["train"].append("sklearn:flower.jpg"), "check-only sources in train"),
    (lambda r: r["soft_focus"].append(r["train"][0]), "soft_focus names photos that are not checks"),
    (lambda r: r.update(soft_focus=list(r["checks"])), "no check photo to count as sharp"),
])
def test_the_params_loader_keeps_checks_apart_from_training(tmp_path, change, message):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    change(raw["real_photos"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "params.yaml")


def test_manipulation_samples_are_visible_edits_at_the_share_asked_and_repeatable():
    vis = PARAMS.labels.visibility
    a = rp.manipulation_samples(PARAMS.real_photos.train, 40, 96, seed=3, visibility=vis)
    b = rp.manipulation_samples(PARAMS.real_photos.train, 40, 96, seed=3, visibility=vis)
    assert len(a.images) == 40 and all(x.shape == (96, 96, 3) and x.dtype == np.uint8 for x in a.images)
    assert a.targets.sum() == 20 and a.kinds.count("authentic") == 20
    assert set(a.kinds) - {"authentic"} <= set(rp.EDIT_KINDS) and len(set(a.kinds)) >= 4
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    few = rp.manipulation_samples(PARAMS.real_photos.train, 40, 96, seed=3, visibility=vis, edited_share=0.125)
    assert few.targets.sum() == 5 and few.kinds.count("authentic") == 35
    assert few.targets[:8].sum() == 1                     # interleaved, not all at the end
    with pytest.raises(ValueError, match="share"):
        rp.manipulation_samples(PARAMS.real_photos.train, 4, 96, seed=3, visibility=vis, edited_share=1.5)


def test_another_look_keeps_the_scene_and_the_labels_share():
    """train.manipulation.real_looks: a share of the real crops rendered as another camera or film would (grey, hue,
    channels, gamma, a quarter turn) before any edit, authentic and edited alike: the share edited does not move."""
    rng = np.random.default_rng(1)
    base = rp.centre_crop(rp.load("mate:Garden.jpg"), 96)
    looks = [rp.another_look(rng, base) for _ in range(40)]
    assert all(x.shape == base.shape and x.dtype == np.uint8 for x in looks)
    assert sum(not np.array_equal(x, base) for x in looks) >= 34       # a channel order may draw the same one
    assert any(np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]) for x in looks)   # grey
    assert any(sorted(x.ravel().tolist()) == sorted(base.ravel().tolist()) for x in looks)   # same pixels, moved
    vis = PARAMS.labels.visibility
    plain = rp.manipulation_samples(PARAMS.real_photos.train, 40, 96, seed=3, visibility=vis)
    other = rp.manipulation_samples(PARAMS.real_photos.train, 40, 96, seed=3, visibility=vis, looks=0.5)
    assert other.targets.sum() == plain.targets.sum() == 20
    assert not all(np.array_equal(x, y) for x, y in zip(plain.images, other.images))


def test_each_edit_changes_the_photo_visibly_or_says_it_did_not():
    rng = np.random.default_rng(0)
    base = rp.centre_crop(rp.load("mate:Garden.jpg"), 128)
    donor = rp.centre_crop(rp.load("mate:Dune.jpg"), 128)
    for kind in rp.EDIT_KINDS:
        img = base.copy()
        visible = rp.edit(img, donor, kind, rng, PARAMS.labels.visibility)
        changed = np.abs(img.astype(int) - base.astype(int)).max() > 0
        assert changed, kind
        if visible:
            assert np.abs(img.astype(float) - base).mean() > 0.05, kind


def test_blur_targets_follow_the_annotators_then_keep_rising_to_the_heaviest_blur():
    levels = [rp.blur_level("gaussian", s) for s in (0, 1, 2, 3, 4, 6, 8)]
    targets = [rp.blur_target(x) for x in levels]
    assert all(b > a for a, b in zip(targets, targets[1:]))
    assert targets[0] < 0.1 and targets[-1] < 1.0
    assert rp.blur_target(2.0) == pytest.approx(rp.expected_score(2.0), abs=0.05)     # the generated labels' scale
    assert rp.blur_level("motion", 21) > rp.blur_level("motion", 9) > rp.blur_level("gaussian", 0) == 0


def test_blur_samples_span_sharp_to_heaviest_and_targets_rise_with_strength():
    s = rp.blur_samples(PARAMS.real_photos.train, 60, 96, seed=5, max_sigma=8, max_motion=21)
    kinds = [k.split(":")[0] for k in s.kinds]
    strengths = np.array([float(k.split(":")[1]) for k in s.kinds])
    assert {"gaussian", "motion"} == set(kinds) and (strengths == 0).sum() >= 5 and strengths.max() > 6
    g = np.array([k == "gaussian" for k in kinds])
    order = np.argsort(strengths[g])
    assert np.all(np.diff(s.targets[g][order]) >= -1e-3)          # (strengths kept to 2 decimals)
