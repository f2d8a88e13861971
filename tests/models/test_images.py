"""Photo to network input: one photo, a resized batch and a list of photos of any size agree."""

import numpy as np
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
