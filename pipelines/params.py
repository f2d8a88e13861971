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


class Params(_Strict):
    seed: int = Field(ge=0)
    data: DataParams
    generator: GeneratorParams
    labels: LabelParams
    prohibited: ProhibitedParams
    validation: ValidationParams

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
