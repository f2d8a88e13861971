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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


@dataclass
class Graph:
    name: str                   # <name>.onnx in the bundle, and the key of its outputs in the raw answer
    module: nn.Module           # photos [N, 3, size, size] in [-1, 1] -> outputs [N, ...]
    size: int
    output: str                 # score | scores | embedding (pipelines.serve.bundle.OUTPUT_KINDS)
    labels: list[str] | None = None     # one per output column, for ``scores``

    def describe(self) -> dict:
        return {"file": f"{self.name}.onnx", "size": self.size, "output": self.output,
                **({"labels": list(self.labels)} if self.labels is not None else {})}


@dataclass
class Bundle:
    graphs: list[Graph]
    meta: dict = field(default_factory=dict)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)       # file name -> writer(path)
    parity: Callable[[Path, np.ndarray], dict[str, float]] | None = None        # extra checks of ``files``
