"""The family registry: the one place that lists the model families and what the rest asks of each.

Every family is a module of this package with the same functions:

    train(root, params) -> dict            writes models/<family>/ (dvc.yaml stage train_<family>)
    evaluate(root, params) -> dict         thresholds on validation, metrics/<family>.json on test
    bundle(root, params) -> Bundle         what export writes: graphs, files, decision settings
    gate_values(test_metrics) -> (recalls per check, auto-pass share)   what the gate judges
    summary(test_metrics) -> str           the family's line in reports and the demo's summary
    REVIEWER_DEFECTS                       the defects it catches, in the whole reviewer's words
                                           (metrics/reviewer.json; ``prohibited`` also covers ``prohibited:<c>``)

``get(name)`` is the only lookup, and it fails loudly on an unknown name; nothing outside this
package branches on family names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pipelines.params import Params, load_params

FAMILIES = ("detector", "sku", "blur", "prohibited", "manipulation")    # the detector first: sku crops by its boxes


@dataclass(frozen=True)
class Family:
    name: str

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.name}")

    def train(self, root: Path, params: Params) -> dict:
        return self.module.train(root, params)

    def evaluate(self, root: Path, params: Params) -> dict:
        return self.module.evaluate(root, params)

    def bundle(self, root: Path, params: Params):
        return self.module.bundle(root, params)

    def gate_values(self, test: dict) -> tuple[dict[str, float], float]:
        return self.module.gate_values(test)

    def summary(self, test: dict) -> str:
        return self.module.summary(test)

    @property
    def defects(self) -> tuple[str, ...]:
        return tuple(self.module.REVIEWER_DEFECTS)


REGISTRY = {name: Family(name) for name in FAMILIES}


def get(name: str) -> Family:
    """The family called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}: expected one of {', '.join(FAMILIES)}") from None


def family_module(name: str) -> ModuleType:
    return get(name).module


def train(name: str, root: str | Path | None = None, params: Params | None = None) -> dict:
    root = Path(root or Path.cwd()).resolve()
    return get(name).train(root, params or load_params(root / "params.yaml"))


def evaluate(name: str, root: str | Path | None = None, params: Params | None = None) -> dict:
    root = Path(root or Path.cwd()).resolve()
    return get(name).evaluate(root, params or load_params(root / "params.yaml"))
