"""Photo to network input: one photo, a resized batch and a list of photos of any size agree."""

import numpy as np
import pytest
import torch

from pipelines.train.trunk import to_input


def test_one_photo_a_batch_and_a_list_give_the_same_input():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    one = to_input(photo, 64)
    assert one.shape == (1, 3, 64, 64)
    assert torch.equal(one, to_input(photo[None], 64)) and torch.equal(one, to_input([photo], 64))
    assert to_input([photo, rng.integers(0, 256, (80, 50, 3), dtype=np.uint8)], 32).shape == (2, 3, 32, 32)
    assert one.min() >= -1.0 and one.max() <= 1.0
    assert torch.allclose(one[0, :, 0, 0], torch.as_tensor(photo[0, 0], dtype=torch.float32) / 127.5 - 1)


def test_the_product_crop_is_the_padded_square_around_the_box_moved_inside_the_photo():
    from pipelines.serve.images import crop_square, product_crop
    from pipelines.train.features import crop_keys

    photo = np.zeros((100, 100, 3), np.uint8)
    photo[40:60, 30:50] = 255                                         # the product: a white 20 x 20 square
    assert crop_square((0.3, 0.4, 0.5, 0.6), 1.5) == pytest.approx((0.25, 0.35, 0.55, 0.65))
    crop = product_crop(photo, (0.3, 0.4, 0.5, 0.6), 1.5, 60)        # 30 px square around it, resized to 60
    assert crop.shape == (60, 60, 3)
    assert (crop[12:48, 12:48] == 255).all() and (crop[:8] == 0).all() and (crop[:, :8] == 0).all()
    assert crop_square((0.9, 0.0, 1.0, 0.2), 1.5) == pytest.approx((0.7, 0.0, 1.0, 0.3))  # moved inside the photo
    whole = product_crop(photo, None, 1.5, 50)                          # no box, or one too large: the whole photo
    assert np.array_equal(whole, product_crop(photo, (0.0, 0.0, 0.9, 0.9), 1.5, 50)) and whole.shape == (50, 50, 3)
    # the features cache keys a crop apart from its photo, and a photo without a crop by the photo's own key
    keys = crop_keys(["a" * 64, "b" * 64], [(0.3, 0.4, 0.5, 0.6), None], 1.5)
    assert keys[1] == "b" * 64 and keys[0] != "a" * 64
    assert keys[0] != crop_keys(["a" * 64], [(0.3, 0.4, 0.5, 0.6)], 1.25)[0]
