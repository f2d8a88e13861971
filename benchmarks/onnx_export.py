"""ONNX export time: torch's TorchScript exporter (what ``pipelines.train.onnx_export`` uses) against its dynamo exporter.

Usage (no data needed: ImageNet-initialised graphs of the shapes the project exports):

    .venv/bin/python benchmarks/onnx_export.py

For each graph (the combined prohibited model with one tail per category of ``params.yaml``, a
light-tail scalar model as blur, manipulation and defects are, and the frozen trunk the features
cache runs on ONNX Runtime) it times both exporters with a dynamic batch axis and checks each
exported graph against eager torch on random inputs (largest absolute difference). Writes
benchmarks/results/onnx_export.json.
"""

from __future__ import annotations

import datetime
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from pipelines.train.families.prohibited import CategoryClassifier, CombinedProhibited
from pipelines.release.export import Probability
from pipelines.train.families import scalar
from pipelines.train.onnx_export import export_dynamic_batch
from pipelines.params import load_params
from pipelines.train.trunk import Trunk

OUT = Path(__file__).parent / "results" / "onnx_export.json"


def _dynamo(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},), verbose=False)
    program.save(str(path))


def _max_diff(module: nn.Module, path: Path, size: int) -> float:
    x = torch.rand(3, 3, size, size) * 2 - 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        return float(np.abs(got - module.eval()(x).numpy()).max())


def main() -> None:
    params = load_params(Path("params.yaml"))
    torch.set_num_threads(params.train.threads)
    size = params.train.prohibited.image_size
    trunk5 = Trunk(params.train.prohibited.trunk_split)
    graphs = {
        "prohibited (trunk + one tail per category)":
            CombinedProhibited(trunk5, {c: CategoryClassifier(trunk5) for c in params.prohibited.categories}),
        "light-tail scalar model (blur, manipulation, defects)": Probability(scalar.build(
            {"trunk_split": params.train.blur.trunk_split, "pretrained": params.train.pretrained,
             "tail_stages": params.train.blur.tail_stages})),
        "frozen trunk, split 3 (feature cache)": Trunk(params.train.blur.trunk_split),
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in graphs.items():
            example = torch.zeros(2, 3, size, size)
            row = {}
            for exporter, fn in (("torchscript", lambda m, e, p: export_dynamic_batch(m, e, p)), ("dynamo", _dynamo)):
                path = Path(tmp) / f"{exporter}.onnx"
                started = time.perf_counter()
                fn(module, example, path)
                row[f"{exporter}_seconds"] = round(time.perf_counter() - started, 2)
                row[f"{exporter}_max_abs_diff"] = _max_diff(module, path, size)
            row["speedup"] = round(row["dynamo_seconds"] / row["torchscript_seconds"], 1)
            rows[name] = row
            print(f"{name}: {row}", flush=True)
    result = {"command": ".venv/bin/python benchmarks/onnx_export.py", "input_size": size,
              "threads": params.train.threads, "torch": torch.__version__, "graphs": rows,
              "machine": f"{platform.machine()}, {platform.python_version()}",
              "date": datetime.date.today().isoformat()}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
