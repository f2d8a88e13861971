"""Where training runs: the one reading of ``train.device`` (params.yaml), used by every family, the
harness, the trunk-feature passes and YOLO.

``auto`` is CUDA when torch sees a GPU and the CPU otherwise; ``cuda`` on a machine without one is an
error that names the setting (never a silent fall back to hours on the CPU); ``cpu`` is the CPU even
where a GPU exists. What leaves training stays device-free: checkpoints are loaded with
``map_location``, the models under ``models/`` are saved from the CPU, ONNX export and serving run on
the CPU (:mod:`pipelines.serve` never imports this).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SETTINGS = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The configured device cannot be used here."""


def resolve(setting: str) -> torch.device:
    """``train.device`` -> the torch device training runs on (see the module docstring)."""
    if setting not in SETTINGS:
        raise ValueError(f"train.device must be one of {', '.join(SETTINGS)}; got {setting!r}")
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return normalise(torch.device("cuda"))
    if setting == "auto":
        return torch.device("cpu")
    raise DeviceError("train.device is 'cuda' in params.yaml but torch sees no CUDA GPU here "
                      f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
                      "set train.device to auto or cpu, or run on a machine with a GPU")


def normalise(device: torch.device | str) -> torch.device:
    """``device`` as a tensor reports its own: ``cuda`` with the index it stands for (``cuda:0``), so that
    devices compare equal to a parameter's ``.device``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def of(params) -> torch.device:
    """The training device of a loaded :class:`pipelines.params.Params`."""
    return resolve(params.train.device)


def describe(device: torch.device) -> str:
    """What a results file records beside a training time: ``cpu``, or ``cuda (<GPU name>)``."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return f"cuda ({torch.cuda.get_device_name(device)})"


def to_device(obj, device: torch.device):
    """``obj`` with every tensor in it on ``device``: a tensor, or tuples, lists and dicts (mappings come back
    as dicts) of them, nested; anything else is returned as it is. On the device a tensor is already on, the same tensor comes back."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):          # a namedtuple keeps its type
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def yolo(device: torch.device) -> str | int:
    """The ``device`` argument of ultralytics' train, val and predict: ``"cpu"``, or the CUDA index (0)."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    raise ValueError(f"ultralytics is only run on cpu or cuda here, not {device}")
