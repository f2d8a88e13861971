"""Serving runs without the training stack: no torch, timm or ultralytics is imported, or shipped."""

from __future__ import annotations

import subprocess
import sys

from pipelines.release.build import SERVING_FILES, _requirements

TRAINING_STACK = ("torch", "torchvision", "timm", "ultralytics", "scipy", "sklearn", "great_expectations", "dvc",
                  "airflow")


def test_the_serving_package_imports_in_a_fresh_interpreter_without_the_training_stack():
    code = ("import sys\n"
            "import pipelines.serve.bundle, pipelines.serve.decision, pipelines.serve.images, pipelines.serve.models\n"
            "import pipelines.serve.gallery_index, faiss\n"
            "import pipelines.serve.multipart, pipelines.serve.photo_input, pipelines.serve.yolo, pipelines.params\n"
            "import monitoring.prediction_log, monitoring.feedback\n"
            f"print(sorted(m for m in {TRAINING_STACK!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"serving imported {done.stdout.strip()}"


def test_the_bento_ships_only_serving_code_and_requirements():
    names = {line.split("==")[0] for line in _requirements().split()}
    assert not names & {"torch", "torchvision", "timm", "ultralytics"}, names
    assert {"onnxruntime", "bentoml", "numpy", "faiss-cpu"} <= names
    assert "pipelines/serve" in SERVING_FILES and not any("train" in f or "release" in f for f in SERVING_FILES)
