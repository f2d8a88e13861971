"""The one typed loader of params.yaml: unknown keys and out-of-range values fail loudly."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Fraction = Field(ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Profile(_Strict):
    n: int = Field(gt=0)
    seed: int = Field(ge=0)


class DataParams(_Strict):
    image_size: int = Field(ge=64, le=1024)
    test_fraction: float = Field(gt=0.0, lt=1.0)
    val_fraction: float = Field(gt=0.0, lt=1.0)
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _fractions(self):
        if self.test_fraction + self.val_fraction >= 1.0:
            raise ValueError("data.test_fraction + data.val_fraction must be < 1")
        return self


class GeneratorParams(_Strict):
    blur_rate: float = Fraction
    sticker_missing_rate: float = Fraction
    dirt_rate: float = Fraction
    off_centre_rate: float = Fraction
    prohibited_rate: float = Fraction
    prohibited_alone_rate: float = Fraction
    manipulation_rate: float = Fraction
    claimed_sku_error_rate: float = Fraction
    lighting: Literal["normal", "dark", "bright", "warm"]
    camera_noise: float = Field(ge=0.0, le=10.0)
    new_sku_rate: float = Fraction
    jpeg_quality: tuple[int, int]

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, v):
        lo, hi = v
        if not 10 <= lo <= hi <= 100:
            raise ValueError("generator.jpeg_quality must be [min, max] with 10 <= min <= max <= 100")
        return v


class LabelParams(_Strict):
    blur_threshold: float = Field(gt=0.0, le=1.0)
    centering_tolerance: float = Field(gt=0.0, lt=0.5)
    sticker_required_categories: tuple[str, ...]


class ProhibitedParams(_Strict):
    categories: tuple[str, ...] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("prohibited.categories has duplicates")
        return v


class ValidationParams(_Strict):
    min_side: int = Field(ge=1)
    max_side: int = Field(ge=1)
    phash_max_distance: int = Field(ge=0, le=255)
    prevalence: dict[str, tuple[float, float]]

    @field_validator("prevalence")
    @classmethod
    def _bounds(cls, v):
        for name, (lo, hi) in v.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"validation.prevalence.{name} must satisfy 0 <= min <= max <= 1")
        return v


class TimmFamily(_Strict):
    """Training settings of a family trained with the shared harness on a frozen-trunk tail."""
    trunk_split: int = Field(ge=1, le=7)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    batch_size: int = Field(gt=0)
    max_epochs: int = Field(gt=0)
    patience: int = Field(ge=0)
    image_size: int | None = Field(default=None, ge=32, le=1024)  # px; null: train.image_size
    tail_stages: int | None = Field(default=None, ge=0)           # null: every remaining stage + head conv
    train_crop: float = Field(default=1.0, gt=0.0, le=1.0)        # side of the random training crop of the trunk output


class SkuTrain(TimmFamily):
    embedding_dim: int = Field(gt=0)
    p: int = Field(ge=2)                    # SKUs per P x K batch
    k: int = Field(ge=2)                    # photos per SKU in a batch
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    triplet_margin: float = Field(gt=0.0)
    gallery_per_sku: int = Field(gt=0)
    knn: int = Field(gt=0)
    holdout_skus: int = Field(ge=1)         # catalogue SKUs kept out of training: the "new SKUs" of the open set


class ProhibitedTrain(TimmFamily):
    negatives_per_epoch: int = Field(gt=0)  # shared negatives drawn per epoch for each category
    positive_repeats: int = Field(ge=1)     # each positive is seen this often per epoch


class DetectorTrain(_Strict):
    model: str                              # ultralytics model yaml (from scratch: no weights are fetched)
    imgsz: int = Field(ge=32)
    epochs: int = Field(gt=0)
    batch: int = Field(gt=0)
    patience: int = Field(ge=0)
    lr0: float = Field(gt=0.0)
    conf: float = Field(gt=0.0, lt=1.0)     # lowest box confidence kept at prediction


class TrainProfile(_Strict):
    """Caps for a quick run (``tiny``: tests); null means no cap."""
    max_epochs: int | None = Field(default=None, gt=0)
    detector_epochs: int | None = Field(default=None, gt=0)
    image_size: int | None = Field(default=None, ge=32)


class TrainParams(_Strict):
    profile: str
    profiles: dict[str, TrainProfile]
    pretrained: bool
    image_size: int = Field(ge=32, le=1024)
    threads: int = Field(gt=0)
    sku: SkuTrain
    blur: TimmFamily
    prohibited: ProhibitedTrain
    manipulation: TimmFamily
    detector: DetectorTrain
    defects: TimmFamily                     # the detector family's sticker-missing and dirt checks

    @model_validator(mode="after")
    def _profile(self):
        if self.profile not in self.profiles:
            raise ValueError(f"train.profile {self.profile!r} is not in train.profiles {sorted(self.profiles)}")
        return self

    @property
    def caps(self) -> TrainProfile:
        return self.profiles[self.profile]

    def input_size(self, family: str | None = None) -> int:
        size = self.image_size
        if family is not None and getattr(getattr(self, family), "image_size", None):
            size = getattr(self, family).image_size
        cap = self.caps.image_size
        return size if cap is None else min(cap, size)

    def family(self, name: str):
        """A family's settings with the active profile's caps applied."""
        settings = getattr(self, name)
        cap = self.caps.max_epochs if name != "detector" else self.caps.detector_epochs
        key = "epochs" if name == "detector" else "max_epochs"
        if cap is not None and getattr(settings, key) > cap:
            settings = settings.model_copy(update={key: cap})
        return settings


class RecallTargets(_Strict):
    """Recall each flag must reach on validation; its threshold is chosen there to meet it."""
    sku_mismatch: float = Fraction
    blur: float = Fraction
    sticker_missing: float = Fraction
    dirt: float = Fraction
    prohibited: float = Fraction
    manipulation: float = Fraction


class Params(_Strict):
    seed: int = Field(ge=0)
    data: DataParams
    generator: GeneratorParams
    labels: LabelParams
    prohibited: ProhibitedParams
    validation: ValidationParams
    train: TrainParams
    recall_targets: RecallTargets

    def digest(self) -> str:
        """A short hash of every value, recorded with models and data versions."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_params_path() -> Path:
    """params.yaml of the project: $REVIEWOPS_PARAMS, else ./params.yaml, else the repo's."""
    env = os.environ.get("REVIEWOPS_PARAMS")
    if env:
        return Path(env)
    cwd = Path.cwd() / "params.yaml"
    if cwd.exists():
        return cwd
    return Path(__file__).resolve().parent.parent / "params.yaml"


def load_params(path: str | Path | None = None) -> Params:
    path = Path(path) if path else default_params_path()
    return _load(path.resolve(), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: Path, _mtime: int) -> Params:
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return Params.model_validate(raw)
