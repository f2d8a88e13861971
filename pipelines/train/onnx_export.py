"""One way to write a torch module as an ONNX graph with a dynamic batch axis, for every caller.

The TorchScript-based exporter (``dynamo=False``) is used: on these graphs (EfficientNet-Lite0
trunks and tails) it writes the same operators as the dynamo exporter ten times faster (the
combined prohibited model: 2.4 s against 24.4 s here), and each export is checked against torch
by its caller (``export.parity``, ``tests/models/test_families.py``).

The TF-ported EfficientNet pads its stride-2 convolutions "same" from the input's size at run time,
which exports as a subgraph of Shape/Ceil/Pad that ONNX Runtime's quantizer cannot infer shapes
through. A graph is always served at the size it was exported at, so each such padding is written as
the constant it is at that size (:func:`static_same_padding`): the same arithmetic, one Pad node.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class _Graph(nn.Module):
    """The exported root: a plain container, so a module's own ``state_dict`` override (``Trunk`` leaves its
    donor network out) cannot hide weights from the exporter, which collects them through ``state_dict``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


@contextmanager
def static_same_padding(module: nn.Module, example: torch.Tensor):
    """Within the block, every timm ``Conv2dSame`` of ``module`` pads by the constant amounts ``example``'s
    spatial size gives it (what ``pad_same`` computes at run time), so the exporter writes constant pads."""
    import torch.nn.functional as F
    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    convs = [m for m in module.modules() if isinstance(m, Conv2dSame)]
    sizes: dict[int, tuple[int, int]] = {}
    def record(conv, args) -> None:
        sizes.setdefault(id(conv), tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in convs]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()

    def static(conv: nn.Conv2d, pad: tuple[int, int, int, int]):
        return lambda x: F.conv2d(F.pad(x, pad), conv.weight, conv.bias, conv.stride, (0, 0), conv.dilation,
                                  conv.groups)

    for conv in convs:
        if id(conv) in sizes:
            (ih, iw), (kh, kw) = sizes[id(conv)], conv.weight.shape[-2:]
            ph = get_same_padding(ih, kh, conv.stride[0], conv.dilation[0])
            pw = get_same_padding(iw, kw, conv.stride[1], conv.dilation[1])
            conv.forward = static(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    try:
        yield module
    finally:
        for conv in convs:
            conv.__dict__.pop("forward", None)


def export_dynamic_batch(module: nn.Module, example: torch.Tensor, path: str | Path,
                         input_name: str = "x", output_name: str = "y") -> Path:
    """Write ``module(example)`` (eval mode, no grad) to ``path`` atomically, batch axis dynamic.

    The exporter restores the root's mode afterwards: the root is put in eval mode first, so ``module`` is left in
    eval mode (a fresh root is in training mode, which the exporter would have spread to ``module``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.onnx")
    module.eval()
    with warnings.catch_warnings(), torch.no_grad(), static_same_padding(module, example):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Graph(module).eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    tmp.replace(path)
    return path
