"""The model families: each module has ``train(root, params) -> dict`` and ``evaluate(root, params) -> dict``.

``train`` writes ``models/<family>/`` (the model and ``train.json`` with its time and history);
``evaluate`` chooses thresholds on validation, measures on the frozen test split and writes
``metrics/<family>.json`` and ``plots/<family>/*.csv``. dvc.yaml runs both as stages.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipelines.params import Params, load_params

FAMILIES = ("sku", "blur", "detector", "prohibited", "manipulation")


def family_module(name: str):
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: expected one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__name__}.{name}")


def train(name: str, root: str | Path | None = None, params: Params | None = None) -> dict:
    root = Path(root or Path.cwd()).resolve()
    return family_module(name).train(root, params or load_params(root / "params.yaml"))


def evaluate(name: str, root: str | Path | None = None, params: Params | None = None) -> dict:
    root = Path(root or Path.cwd()).resolve()
    return family_module(name).evaluate(root, params or load_params(root / "params.yaml"))
