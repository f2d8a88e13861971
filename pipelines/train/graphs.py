"""What a trained family hands to export: its torch graphs, what each outputs, and the decision settings.

``Bundle`` is the family's side of :func:`pipelines.release.export.export_bundle`: every graph is
written to ONNX and checked against torch; ``files`` write what is not a torch graph (the SKU
gallery, the YOLO detector); ``meta`` carries what the decision needs beside the thresholds,
copied from params.yaml (:mod:`pipelines.serve.decision`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Probability(nn.Module):
    """sigmoid(net(x)): the bundle serves probabilities and scores, not logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def trunk(self) -> nn.Module | None:
        return getattr(self.net, "trunk", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.from_features(f))


class FromFeatures(nn.Module):
    """A served module's part after its frozen trunk: the trunk's output -> the module's output."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.module.from_features(f)


def trunk_of(module: nn.Module):
    """The frozen ImageNet trunk ``module`` runs first (:class:`pipelines.train.trunk.Trunk`), when it computes
    its output from that trunk's features (``module.from_features``); else None (the module is one graph)."""
    from pipelines.train.trunk import Trunk

    trunk = getattr(module, "trunk", None)
    return trunk if isinstance(trunk, Trunk) and callable(getattr(module, "from_features", None)) else None


@dataclass
class Graph:
    name: str                   # <name>.onnx in the bundle, and the key of its outputs in the raw answer
    module: nn.Module           # photos [N, 3, size, size] in [-1, 1] -> outputs [N, ...]
    size: int
    output: str                 # score | scores | embedding (pipelines.serve.bundle.OUTPUT_KINDS)
    labels: list[str] | None = None     # one per output column, for ``scores``
    crop_pad: float | None = None       # reads the product crop (pipelines.serve.images.product_crop), not the photo

    def describe(self) -> dict:
        return {"file": f"{self.name}.onnx", "size": self.size, "output": self.output,
                **({"labels": list(self.labels)} if self.labels is not None else {}),
                **({"crop": {"box": "product", "pad": float(self.crop_pad)}} if self.crop_pad else {})}


@dataclass
class Bundle:
    graphs: list[Graph]
    meta: dict = field(default_factory=dict)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)       # file name -> writer(path)
    parity: Callable[[Path, np.ndarray], dict[str, float]] | None = None        # extra checks of ``files``
