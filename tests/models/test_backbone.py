"""The pretrained backbone loads shape by shape and recognises real photos it never trained on."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.train.backbone import MEAN, STD, WeightsMismatch, _convert, create_backbone


def _real_photo(package: str, rel: str) -> Path:
    import importlib

    return Path(importlib.import_module(package).__file__).parent / rel


def _tensor(path: Path) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    x = (np.asarray(img, np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None]


@pytest.mark.parametrize("package,rel,label", [
    ("ultralytics", "assets/bus.jpg", "minibus"),
    ("sklearn", "datasets/images/flower.jpg", "daisy"),
])
def test_pretrained_backbone_classifies_real_photos(package, rel, label):
    from timm.data import ImageNetInfo

    model = create_backbone(pretrained=True).eval()
    with torch.no_grad():
        probs = model(_tensor(_real_photo(package, rel))).softmax(-1)[0]
    top5 = [ImageNetInfo().index_to_description(int(i)) for i in probs.topk(5).indices]
    assert label in top5[0], top5


def test_a_shape_mismatch_fails_loudly():
    model = create_backbone(pretrained=False)
    state = model.state_dict()
    victim = [k for k, v in state.items() if v.ndim == 4][3]
    broken = type(state)((k, v[:1] if k == victim else v) for k, v in state.items())
    with pytest.raises(WeightsMismatch, match="does not fit"):
        _convert(broken, state)
