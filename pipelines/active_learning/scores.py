"""What selection knows of each pool photo: the trained model's score, its uncertainty, and an embedding.

Each photo is scored by the trained models under ``models/``, through the family's own loader and
inference.

- Prohibited: the category classifier's probability p, uncertainty ``1 - |2p - 1|`` (1 at p = 0.5,
  0 at p = 0 or 1).
- Dirt: the larger of two uncertainties, that of the defects net's dirt probability (what the service
  flags on) and that of the least sure YOLO dirt box (a box at confidence 0.5 is a coin flip; boxes
  from ``train.detector.conf`` up count). Not "lowest maximum box confidence": on the demo data the
  YOLO dirt boxes reached mAP50 0.0, so that rule would pick the photos where YOLO finds nothing,
  mostly clean ones.

The embedding (the prohibited family's frozen trunk output, averaged over a 4 x 4 grid, L2-normalised)
is what near-duplicate detection compares (``select.pick``).

Scoring runs where training does (``train.device``): the families' own inference, and YOLO's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.params import Params
from pipelines.train import device as devices
from pipelines.train.evaluate import model_dir
from pipelines.train.families import common, detector, prohibited
from pipelines.train.trunk import Trunk

EMBEDDING_GRID = 4  # cells per side of the embedding's average pooling


def uncertainty(p: np.ndarray) -> np.ndarray:
    """``1 - |2p - 1|``: 1 for a coin flip, 0 for a sure answer."""
    return 1.0 - np.abs(2.0 * np.asarray(p, dtype=np.float64) - 1.0)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def score(root: Path, params: Params, df: pd.DataFrame, family: str,
          category: str | None) -> tuple[np.ndarray, np.ndarray, str, list | None]:
    """(probability, uncertainty, model version, dirt boxes or None) per photo, from the trained models.

    Prohibited: the category classifier's probability p, uncertainty ``1 - |2p - 1|``. Dirt: the defects
    net's dirt probability p and every YOLO dirt box the detector finds (at ``train.detector.conf``); the
    uncertainty is the larger of the net's ``1 - |2p - 1|`` and that of its least sure box (a box at
    confidence 0.5 is a coin flip), so a photo is asked about when either model hesitates.
    """
    if family == "prohibited":
        model = prohibited.load_combined(root, params, [category])
        version = _digest(model_dir("prohibited", root) / category / "model.pt")
        p = prohibited.probabilities(root, params, df, model)[:, 0]
        return p, uncertainty(p), f"prohibited:{category}@{version}", None
    p = detector.defect_scores(root, params, df)["dirt_score"].to_numpy()
    boxes = dirt_boxes(root, params, list(df["path"]))
    box_unc = np.array([max((float(uncertainty(b[4])) for b in found), default=0.0) for found in boxes])
    version = f"detector:defects@{_digest(model_dir('detector', root) / f'{detector.DEFECTS}.pt')}" \
              f"+yolo@{_digest(detector.model_path(root))}"
    return p, np.maximum(uncertainty(p), box_unc), version, boxes


def dirt_boxes(root: Path, params: Params, paths: list[str]) -> list[list[tuple[float, ...]]]:
    """Per photo, the YOLO dirt boxes ``(x0, y0, x1, y1, confidence)`` (normalised) at or above ``train.detector.conf``."""
    model = detector.load_detector(root, params.train.threads)
    found = {}
    for result in model.predict(source=list(paths), stream=True, conf=params.train.detector.conf,
                                imgsz=detector.image_size(params), batch=params.train.detector.batch,
                                device=devices.yolo(devices.of(params)), verbose=False):
        b = result.boxes.cpu()
        dirt = b.cls.numpy().astype(int) == detector.CLASS_ID["dirt"]
        found[str(Path(result.path).absolute())] = [(*map(float, xy), float(c)) for xy, c in
                                                    zip(b.xyxyn.numpy()[dirt], b.conf.numpy()[dirt])]
    return [found[str(Path(p).absolute())] for p in paths]


def grid_embedding(x: torch.Tensor) -> np.ndarray:
    """Trunk outputs [N, C, H, W] averaged over a 4 x 4 grid (the photo's layout counts), L2-normalised."""
    grid = torch.nn.functional.adaptive_avg_pool2d(x.float(), EMBEDDING_GRID).flatten(1)
    return torch.nn.functional.normalize(grid, dim=1).numpy()


def embeddings(root: Path, params: Params, df: pd.DataFrame) -> np.ndarray:
    """The grid embedding of the prohibited family's frozen trunk output (the cached features)."""
    trunk = Trunk(params.train.prohibited.trunk_split, pretrained=params.train.pretrained)
    return grid_embedding(common.features(root, params, trunk, df, size=params.train.input_size("prohibited")))
