"""Camera views (pipelines/train/camera.py): what another camera and an upload make of a photo, as extra training
rows with the photo's label; drawn from params.yaml's ranges, reproducible, cached like photos."""

from __future__ import annotations

import json
from functools import partial

import cv2
import numpy as np
import pytest
import torch
import yaml

from pipelines.params import CameraAugment, load_params
from pipelines.serve.images import load_resized, read_rgb
from pipelines.train.camera import CameraView, develop, views

FLAT = CameraAugment(exposure=0.0, white_balance=0.0, noise=(0.0, 0.0), resize=1.0, jpeg_quality=(100, 100))


def _photo(tiny_project, i: int = 0):
    from pipelines.data.dataset import versioned_manifest

    row = versioned_manifest(tiny_project).iloc[i]
    return row["path"], row["sha256"]


def _with_views(repo, family: str, views: int = 1):
    """``repo``'s params with ``train.<family>.camera_views`` set, written and loaded."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["train"][family]["camera_views"] = views
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(repo / "params.yaml")


def _sharpness(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_a_view_is_drawn_from_its_key_and_changes_what_the_ranges_allow(tiny_project):
    path, sha = _photo(tiny_project)
    rgb = read_rgb(path)
    ranges = load_params().train.camera
    first, second = views(ranges, 2, seed=7)
    a = first(rgb, first.key(sha))
    assert a.shape == rgb.shape and a.dtype == np.uint8
    assert np.array_equal(a, first(rgb, first.key(sha)))                     # a rerun draws the same view
    assert not np.array_equal(a, second(rgb, second.key(sha)))               # another view, another draw
    assert 1.0 < np.abs(a.astype(int) - rgb).mean() < 40.0                   # a change, not another photo
    # with nothing to draw, only the JPEG round trip at quality 100 is left
    assert np.abs(develop(rgb, np.random.default_rng(0), FLAT).astype(int) - rgb).mean() < 1.0


def test_exposure_white_balance_and_resize_each_act(tiny_project):
    rgb = read_rgb(_photo(tiny_project)[0])
    rng = lambda: np.random.default_rng(3)                                     # noqa: E731
    assert abs(develop(rgb, rng(), FLAT.model_copy(update={"exposure": 1.0})).mean() - rgb.mean()) > 3.0
    cast = develop(rgb, rng(), FLAT.model_copy(update={"white_balance": 0.3})).reshape(-1, 3).mean(0)
    assert np.ptp(cast / rgb.reshape(-1, 3).mean(0)) > 0.02                    # channels gained differently
    small = FLAT.model_copy(update={"resize": 0.4})
    assert _sharpness(develop(rgb, rng(), small)) < 0.8 * _sharpness(rgb)      # a smaller upload is softer...
    assert _sharpness(develop(rgb, rng(), small, resize=False)) == pytest.approx(_sharpness(rgb), rel=0.05)  # ...or kept


def test_view_keys_are_never_a_photos_and_follow_the_ranges():
    ranges = load_params().train.camera
    v = CameraView(ranges, 0, 7)
    assert v.key("a" * 64) != "a" * 64 and v.key("a" * 64) != v.key("b" * 64)
    assert v.key("a" * 64) != CameraView(ranges, 1, 7).key("a" * 64) != CameraView(ranges, 0, 8).key("a" * 64)
    assert v.key("a" * 64) != CameraView(ranges.model_copy(update={"noise": (0.0, 9.0)}), 0, 7).key("a" * 64)
    assert v.key("a" * 64) != CameraView(ranges, 0, 7, resize=False).key("a" * 64)


def test_trunk_features_of_a_view_are_the_views_own_and_cached_beside_the_photos(tiny_project, tmp_path):
    from pipelines.data.dataset import versioned_manifest
    from pipelines.train.features import cache_file, compute, trunk_features
    from pipelines.train.trunk import Trunk

    df = versioned_manifest(tiny_project).head(6)
    paths, shas = list(df["path"]), list(df["sha256"])
    trunk, view = Trunk(3), views(load_params().train.camera, 1, seed=7)[0]
    plain = trunk_features(trunk, paths, shas, 96, root=tmp_path)
    seen = trunk_features(trunk, paths, shas, 96, root=tmp_path, view=view)
    direct = compute(trunk, paths, 96, prepare=[partial(view, key=view.key(s)) for s in shas])
    torch.testing.assert_close(seen.float(), direct.float(), atol=0.02, rtol=0.01)
    assert not torch.equal(seen, plain)
    stored = torch.load(cache_file(trunk, 96, tmp_path), weights_only=True)["sha256"]
    assert set(stored) == set(shas) | {view.key(s) for s in shas}
    images = load_resized(paths[:2], 96, prepare=[partial(view, key=view.key(s)) for s in shas[:2]])
    assert images.shape == (2, 96, 96, 3)
    with pytest.raises(ValueError, match="prepare differ"):
        load_resized(paths[:2], 96, prepare=[None])


def test_a_score_family_trains_on_its_photos_and_their_camera_views(copy_project):
    """train.<family>.camera_views: each training photo (the extra generated ones too) once more per view, with its
    target; validation as it is."""
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.train.families import train

    repo = copy_project()
    params = _with_views(repo, "manipulation")
    train("manipulation", repo, params)
    record = json.loads((repo / "models" / "manipulation" / "train.json").read_text())
    photos = len(split_frame(versioned_manifest(repo), "train"))
    assert record["train_photos"] == photos and record["camera_view_photos"] == photos + record["extra_train_photos"]
    assert record["val_photos"] == len(split_frame(versioned_manifest(repo), "val"))


def test_prohibited_categories_share_one_set_of_camera_views(copy_project):
    """Every category and the neck read the same training frame: the photos, then each view of them."""
    from pipelines.train.families.prohibited import _trunk_outputs

    repo = copy_project()
    params = _with_views(repo, "prohibited")
    _, _, (train_df, x_train), (val_df, x_val) = _trunk_outputs(repo, params)
    half = len(train_df) // 2
    assert len(train_df) == len(x_train) == 2 * half and len(x_val) == len(val_df)
    assert list(train_df["sha256"][:half]) == list(train_df["sha256"][half:])
    assert not torch.equal(x_train[:half], x_train[half:])
    _, _, (_, again), _ = _trunk_outputs(repo, params)
    assert torch.equal(again, x_train)
