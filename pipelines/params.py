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
    practice_sku_rate: float = Field(0.0, ge=0.0, le=1.0)   # products drawn from the practice SKUs (catalog.practice_skus): training only
    jpeg_quality: tuple[int, int]
    product_style: Literal["flat", "shaded"] = "flat"
    white_balance_sd: float = Field(0.03, ge=0.0, le=0.2)

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, v):
        lo, hi = v
        if not 10 <= lo <= hi <= 100:
            raise ValueError("generator.jpeg_quality must be [min, max] with 10 <= min <= max <= 100")
        return v


def generator_rates(v: dict[str, float], where: str) -> dict[str, float]:
    """``v`` checked as generator rate overrides: known ``*_rate`` knobs of ``generator``, each in [0, 1]."""
    unknown = sorted(k for k in v if not k.endswith("_rate") or k not in GeneratorParams.model_fields)
    if unknown:
        raise ValueError(f"{where}: unknown generator rate(s) {unknown}")
    bad = sorted(k for k, r in v.items() if not 0.0 <= r <= 1.0)
    if bad:
        raise ValueError(f"{where}: {bad} must lie in [0, 1]")
    return v


class LiveMixParams(_Strict):
    """The traffic a marketplace sends (most photos clean), as generator knobs over ``generator``."""
    rates: dict[str, float]                 # generator knob -> value (rates only); the rest as in ``generator``
    n: dict[str, int]                       # train profile -> photos in the live-mix sample (reviewer stage, reference)
    stream: dict[str, int]                  # train profile -> photos per live stream of `make demo`
    seed: int = Field(ge=0)

    @field_validator("rates")
    @classmethod
    def _rates(cls, v):
        return generator_rates(v, "live_mix.rates")


class VisibilityParams(_Strict):
    """What a person could see: defects the generator draws below these are drawn but not labelled."""
    dirt_min_area_px: float = Field(ge=0.0)          # a dirt spot's area in the photo, px
    dirt_min_contrast: float = Field(ge=0.0, le=1.0)  # its mean change in its most changed RGB channel, after lighting and blur
    manipulation_min_trace: float = Field(ge=0.0, le=1.0)  # an edit's mean luminance change over the pixels it changed
    clone_min_object_share: float = Field(ge=0.0, le=1.0)  # a clone's source or destination square: share of object pixels
    clone_min_coarse_trace: float = Field(ge=0.0, le=1.0)  # ...or its trace at a coarse scale (backdrop onto backdrop)
    max_covered: float = Field(ge=0.0, le=1.0)  # an item or dirt spot more of which an edit pasted over is not labelled


class LabelParams(_Strict):
    blur_threshold: float = Field(gt=0.0, le=1.0)
    centering_tolerance: float = Field(gt=0.0, lt=0.5)
    frame_border: float = Field(ge=0.0, lt=0.5)   # a product box this close to an edge is cut by the frame
    sticker_required_categories: tuple[str, ...]
    visibility: VisibilityParams


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
    balanced: bool = False      # binary families: every training batch half positives (pipelines.train.families.common)
    real_samples: int = Field(default=0, ge=0)  # blur, manipulation: samples made from real_photos.train added to the
                                                # training split (a quarter as many to validation); 0: none
    camera_views: int = Field(default=0, ge=0, le=4)  # score families: each training photo also seen this many times as
                                                # a camera would make it (train.camera, pipelines.train.camera); 0: none
    ema_decay: float = Field(default=0.0, ge=0.0, lt=1.0)  # validate and keep the moving average of the weights
                                                # (pipelines.train.harness.WeightAverage); 0: the weights as trained


class ExtraPhotosFamily(TimmFamily):
    """A :class:`TimmFamily` that may also learn from extra generated photos whose defects are common
    (``extra_photos`` of them, generator ``extra_rates``): they join the training split only, validation stays
    the versioned split (:func:`pipelines.data.generate.enriched_photos`)."""
    extra_photos: int = Field(default=0, ge=0)    # 0: the versioned training split only
    extra_rates: dict[str, float] = {}            # generator rates of the extra photos (e.g. dirt_rate: 0.5)

    @field_validator("extra_rates")
    @classmethod
    def _rates(cls, v):
        return generator_rates(v, "train.<family>.extra_rates")


class ManipulationTrain(ExtraPhotosFamily):
    real_edited_share: float = Field(default=0.5, ge=0.0, le=1.0)   # of the real samples, the share edited
    real_looks: float = Field(default=0.0, ge=0.0, le=1.0)   # of the real samples, the share seen as another camera or film renders the scene
    input_filter: Literal["none", "residual"] = "none"   # residual: the trunk reads the photo's fine residual, scaled
                                                          # per photo (pipelines.train.trunk.Residual): a trunk of its own
    pooling: Literal["mean_max", "contrast", "local"] = "mean_max"  # the light tail's pooling
                                                          # (pipelines.train.trunk.LightTail); contrast: each channel's
                                                          # maximum less its average only; local: a logit per place,
                                                          # log-sum-exp pooled (multiple-instance learning)


class BlurTrain(TimmFamily):
    loss: Literal["mse", "bce"] = "mse"     # on the sigmoid against the score (mse), or cross-entropy with soft targets


class SkuTrain(ExtraPhotosFamily):
    embedding_dim: int = Field(gt=0)
    p: int = Field(ge=2)                    # SKUs per P x K batch
    k: int = Field(ge=2)                    # photos per SKU in a batch
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    triplet_margin: float = Field(gt=0.0)
    gallery_per_sku: int = Field(gt=0)
    gallery_blur_cutoff: float = Fraction   # gallery photos with an annotator blur score at or above this come last
    candidates: int = Field(gt=0)
    holdout_skus: int = Field(ge=1)         # catalogue SKUs kept out of training: the "new SKUs" of the open set
    crop_pad: float | None = Field(default=None, ge=1.0, le=4.0)  # the embedding reads the square around the product
                                            # box, this many times its longer side (null: the whole photo)
    twins: int = Field(default=0, ge=0)     # each batch pairs half its SKUs with one of their this many most
                                            # confusable SKUs (sku.confusable); 0: SKUs drawn at random
    parts: int = Field(default=0, ge=0, le=8)  # >0: the tail's last map cut into this many horizontal stripes, each
                                            # with an embedding and a classifier of its own (sku.SkuNet)
    parts_weight: float = Field(default=0.5, gt=0.0, lt=1.0)  # their share of a photo's similarity


class ProhibitedTrain(TimmFamily):
    negatives_per_epoch: int = Field(gt=0)  # shared negatives drawn per epoch for each category
    positive_repeats: int = Field(ge=1)     # each positive is seen this often per epoch
    neck: bool = False                      # stages after the split: one neck shared by every category (tail_stages unused)
    neck_epochs: int = Field(default=8, gt=0)


class DefectsTrain(ExtraPhotosFamily):
    """The detector family's sticker-missing and dirt net."""


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
    real_samples: int | None = Field(default=None, ge=0)   # real-photo training samples of a family
    extra_photos: int | None = Field(default=None, ge=0)   # extra generated training photos (train.defects)


class CameraAugment(_Strict):
    """What real cameras and uploads do to a photo (pipelines.train.camera): the ranges training views draw from."""
    exposure: float = Field(ge=0.0, le=2.0)              # brightness gain 2^U(-e, e), in linear light
    white_balance: float = Field(ge=0.0, lt=1.0)         # per-channel gain 1 + U(-w, w), in linear light
    noise: tuple[float, float]                           # Gaussian sensor noise, std in 8-bit levels, U(lo, hi)
    resize: float = Field(gt=0.0, le=1.0)                # down to U(r, 1) of the side and back up (a smaller upload)
    jpeg_quality: tuple[int, int]                        # re-encoded at U(lo, hi): the platform's or the app's JPEG

    @field_validator("noise")
    @classmethod
    def _noise(cls, v):
        if not 0 <= v[0] <= v[1]:
            raise ValueError("train.camera.noise must be [lo, hi] with 0 <= lo <= hi")
        return v

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, v):
        if not 10 <= v[0] <= v[1] <= 100:
            raise ValueError("train.camera.jpeg_quality must be [lo, hi] with 10 <= lo <= hi <= 100")
        return v


class TrainParams(_Strict):
    profile: str
    profiles: dict[str, TrainProfile]
    pretrained: bool
    image_size: int = Field(ge=32, le=1024)
    threads: int = Field(gt=0)
    # where the timm families, the feature passes and YOLO train (pipelines.train.device.resolve):
    # auto = cuda when torch sees a GPU, else cpu; cuda without a GPU is an error, not a fallback
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sku: SkuTrain
    blur: BlurTrain
    prohibited: ProhibitedTrain
    manipulation: ManipulationTrain
    detector: DetectorTrain
    defects: DefectsTrain                   # the detector family's sticker-missing and dirt checks
    camera: CameraAugment                   # the training views of train.<family>.camera_views

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
        if cap is not None and getattr(settings, "neck_epochs", 0) > cap:
            settings = settings.model_copy(update={"neck_epochs": cap})
        for key in ("real_samples", "extra_photos"):      # sample counts the profile caps
            cap = getattr(self.caps, key)
            if cap is not None and getattr(settings, key, 0) > cap:
                settings = settings.model_copy(update={key: cap})
        return settings


# The checks the gate judges (each family's ``gate_values`` names them; prohibited ones as ``prohibited:<category>``).
CHECKS = ("sku_mismatch", "unknown_sku", "blur", "sticker_missing", "dirt", "centring", "prohibited", "manipulation")
EXTRA_POSITIVE_CHECKS = ("manipulation", "sticker_missing", "dirt", "unknown_sku")   # checks whose defect the
                                            # generator can draw on every photo of a calibration set
                                            # (recall_targets.extra_positives; unknown_sku: a product outside the catalogue)


class RecallTargets(_Strict):
    """Recall each flag must reach on validation, with ``confidence``; its threshold is chosen there to meet it."""
    confidence: float = Field(ge=0.0, lt=1.0)   # one-sided confidence of the recall's lower bound (0: the point estimate)
    sku_mismatch: float = Fraction          # wrong claimed SKU (a catalogue SKU shown, another claimed)
    sku_mismatch_claims: Literal["labelled", "every", "every_kind"] = "every"   # what sku_mismatch is reached over
                                            # (sku.calibrate_frame): the labelled wrong claims, or every wrong claim of
                                            # every validation photo (kinds mixed as labelled, or each on its own)
    unknown_sku: float = Fraction           # a product outside the catalogue, listed under the catalogue SKU most like it
    blur: float = Fraction
    sticker_missing: float = Fraction
    dirt: float = Fraction
    prohibited: float = Fraction
    manipulation: float = Fraction
    extra_positives: dict[str, int] = Field(default_factory=dict)   # check -> generated photos with its defect drawn on
                                            # every one, whose labelled positives join validation's where the check's
                                            # threshold is set (absent or 0: validation's alone)

    @field_validator("extra_positives")
    @classmethod
    def _extra(cls, v):
        unknown = sorted(set(v) - set(EXTRA_POSITIVE_CHECKS))
        if unknown:
            raise ValueError(f"extra_positives: no generated positives for {unknown}: "
                             f"expected some of {', '.join(EXTRA_POSITIVE_CHECKS)}")
        if any(n < 0 for n in v.values()):
            raise ValueError("extra_positives: counts are >= 0")
        return v


class GateParams(_Strict):
    """Promotion criteria, all measured on the frozen test split (pipelines/release/gate.py)."""
    recall_floors: dict[str, float]         # check -> lowest recall a candidate may have
    max_recall_drop: float = Fraction       # against production: a check's recall may not fall by more
    max_auto_pass_drop: float = Fraction    # against production: the family's auto-pass share may not fall by more
    max_reviewer_auto_pass_drop: float = Fraction   # the whole reviewer's clean auto-pass (test) may not fall by more
    allow_unmeasured: bool = False          # a check with no positive on the test split passes its floor (tiny data only)
    outside_catalogue_photos: int = Field(default=0, ge=0)   # generated photos of products in no gallery that join the
                                            # test split's where unknown_sku is judged (train.caps.extra_photos caps it)
    onnx_parity_tolerance: float = Field(gt=0.0, lt=0.1)   # largest |ONNX - torch| on real photos at registration
    real_photos: RealPhotoFloors

    @field_validator("recall_floors")
    @classmethod
    def _floors(cls, v):
        unknown, missing = sorted(set(v) - set(CHECKS)), [c for c in CHECKS if c not in v]
        if unknown or missing:
            raise ValueError(f"gate.recall_floors must give a floor to each check ({', '.join(CHECKS)}): "
                             + "; ".join(filter(None, (unknown and f"unknown {unknown}", missing and f"missing {missing}"))))
        for name, floor in v.items():
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"gate.recall_floors.{name} must be in [0, 1]")
        return v


class RealPhotoFloors(_Strict):
    """What the gate asks of a candidate on the real-photo checks (metrics/real_photos.json)."""
    manipulation_false_alarms: float = Fraction    # at most this share of unedited real photos flagged as edited
    manipulation_edit_recall: float = Fraction     # at least this share of edits made on real photos flagged
    blur_pooled_spearman: float = Field(ge=-1.0, le=1.0)   # blur score against strength, every photo and level pooled
    blur_sharp_flagged: float = Fraction           # at most this share of sharp real photos flagged as blurred
    unknown_sku: float = Fraction                  # at least this share of real non-product photos answered unknown_sku


REAL_PHOTO_CHECK_ONLY = ("ultralytics", "sklearn", "matplotlib")   # shared/DATA.md: the project's real-photo checks
REAL_PHOTO_TRAIN_ONLY = ("skimage",)                                 # the generator's backgrounds and splice sources


class RealPhotoParams(_Strict):
    """Real photographs (shared/DATA.md, pipelines/data/real_photos.py): training material and checks, never both."""
    train: list[str]                         # <source>:<name>: what the blur and manipulation families learn from
    checks: list[str]                        # what metrics/real_photos.json scores the candidates on
    soft_focus: list[str] = []               # checks whose views are not all in focus (bokeh, a featureless sky):
                                             # their unblurred views start the blur series but are not counted as sharp
    seed: int = Field(ge=0)
    check_views: int = Field(ge=1)           # square views of each check photo: the centre one and random crops
    edits_per_view: int = Field(ge=1)        # edited copies of each view (edit kinds in turn)
    gaussian_sigmas: list[float]             # blur strengths of the check (px at 256 px), 0 first: the sharp photo
    motion_lengths: list[float]              # motion streak lengths of the check (px at 256 px)
    train_max_sigma: float = Field(gt=0.0)   # training blur spans sigma up to this and motion up to the next
    train_max_motion: float = Field(gt=1.0)

    @model_validator(mode="after")
    def _apart(self):
        """shared/DATA.md: a check proves something only on photos the models never saw, so no photo is in both
        sets, scikit-image's (the generator's material) is never a check and the check-only sources never train."""
        both = sorted(set(self.train) & set(self.checks))
        wrong_check = sorted(r for r in self.checks if r.partition(":")[0] in REAL_PHOTO_TRAIN_ONLY)
        wrong_train = sorted(r for r in self.train if r.partition(":")[0] in REAL_PHOTO_CHECK_ONLY)
        problems = [f"in both train and checks: {both}" if both else "",
                    f"generator material as a check: {wrong_check}" if wrong_check else "",
                    f"check-only sources in train: {wrong_train}" if wrong_train else ""]
        if any(problems):
            raise ValueError("real_photos: " + "; ".join(p for p in problems if p))
        if not set(self.soft_focus) <= set(self.checks):
            raise ValueError(f"real_photos.soft_focus names photos that are not checks: "
                             f"{sorted(set(self.soft_focus) - set(self.checks))}")
        if set(self.soft_focus) == set(self.checks):
            raise ValueError("real_photos.soft_focus leaves no check photo to count as sharp")
        if not self.gaussian_sigmas or self.gaussian_sigmas[0] != 0 or self.gaussian_sigmas != sorted(self.gaussian_sigmas):
            raise ValueError("real_photos.gaussian_sigmas must rise from 0 (the sharp photo)")
        if self.motion_lengths != sorted(self.motion_lengths):
            raise ValueError("real_photos.motion_lengths must rise")
        return self


class Int8Params(_Strict):
    """INT8 graphs (pipelines/release/quantize.py): which graphs serve quantized is decided by the whole reviewer."""
    enabled: bool                            # false: every graph serves FP32
    calibration_photos: int = Field(gt=0)    # validation photos the activation ranges are read on
    min_speedup: float = Field(ge=0)         # a graph is offered as INT8 when FP32 time / INT8 time is at least this
                                             # (0: every graph, whatever its speed; the reviewer's figures decide)
    max_auto_pass_drop: float = Fraction     # ...and kept when the test clean auto-pass stays within this of FP32's
                                             # (and every defect's photo recall at its floor)
    real_photo_views: int = Field(ge=1)      # ...and the gate's real-photo figures, measured on this many views of each
    max_real_photo_change: float = Fraction  # real training photo, within this of FP32's (release.real_photos.TrainingPhotoMemo)


class GalleryIndexParams(_Strict):
    """The SKU gallery searched through faiss-cpu's IVF index from this size up (pipelines/serve/gallery_index.py)."""
    min_mib: float = Field(ge=0)            # gallery rows x width x 4 bytes at or above which the index is used
    nlist: int = Field(ge=1)                # k-means lists (at most one per 39 gallery rows)
    nprobe: int = Field(ge=1)               # lists a photo reads
    train_rows: int = Field(ge=1)           # gallery rows the lists are learnt from


class ServingParams(_Strict):
    """The reviewer service (bentos/): input limits, batching, smoke set, prediction log."""
    port: int = Field(ge=1, le=65535)       # the serving port `reviewops deploy` answers on (loopback)
    max_upload_bytes: int = Field(gt=0)     # a larger photo is refused with 413
    max_pixels: int = Field(gt=0)           # width x height beyond this is refused (decompression bombs)
    max_batch_photos: int = Field(gt=0)     # photos in one /review_batch request
    batch_max_size: int = Field(gt=0)       # greedy batching: most photos in one run of the models
    batch_max_latency_ms: int = Field(gt=0) # a photo that waited longer than this for the models is shed (503)
    thread_chunk: int = Field(ge=0)         # a run's photos go to the threads in chunks of this many (0: one part per thread)
    golden_photos: int = Field(gt=0)        # smoke set recorded at build, replayed by deploy
    prediction_log: str                     # SQLAlchemy URL; relative sqlite paths are under the project
    photo_archive: str | None = None           # reviewed photos kept here by SHA-256 (relative: under the project)
    box_confidence: float = Fraction        # dirt boxes at or above this confidence are listed in the answer
    max_boxes: int = Field(gt=0)            # at most this many sticker and dirt boxes per answer
    ready_probe_s: float = Field(gt=0, le=1)  # /readyz waits at most this long for the model worker's answer
    int8: Int8Params                        # graphs served as INT8 where the whole reviewer holds
    gallery_index: GalleryIndexParams       # a large SKU gallery's search


class SampleSet(_Strict):
    n: int = Field(gt=0)
    seed: int = Field(ge=0)


class ActiveLearningExperiment(_Strict):
    """benchmarks/active_learning.py: rounds of labels chosen by uncertainty against rounds chosen at random."""
    category: str                           # the prohibited category measured
    shift: str                              # generator knobs of pool and test set (``reviewops generate --shift``)
    pool: SampleSet                         # the unlabelled pool
    test: SampleSet                         # the fixed held-out labelled test set
    seed_labels: int = Field(gt=0)          # labelled seed drawn from the pool...
    seed_positives: int = Field(ge=0)       # ...holding this many positives
    k: int = Field(gt=0)                    # labels per round...
    rounds: int = Field(gt=0)               # ...for this many rounds...
    then_k: int = Field(gt=0)               # ...then this many per round until the pool is exhausted
    repetitions: int = Field(gt=0)
    precision: float = Field(gt=0.0, le=1.0)  # recall is read at this precision
    image_size: int = Field(ge=32, le=1024)   # px: the experiment's training and scoring input

    @model_validator(mode="after")
    def _seed(self):
        if self.seed_positives > self.seed_labels:
            raise ValueError("active_learning.experiment.seed_positives must be <= seed_labels")
        return self


class ActiveLearningParams(_Strict):
    """reviewops select: which unlabelled photos go to annotators (pipelines/active_learning/select.py)."""
    k: int = Field(gt=0)                    # photos per annotation queue
    pool_size: int = Field(gt=0)            # most pool photos scored
    duplicate_distance: float = Field(ge=0.0, le=2.0)  # cosine distance of embeddings: at or below, a near-duplicate
    box_confidence: float = Fraction        # YOLO dirt boxes at or above it pre-fill the annotator's rectangles
    experiment: ActiveLearningExperiment


# Evidently drift tests whose score is a p-value (drift when p < threshold); the others are distances
# (drift when distance >= threshold). Only p-value thresholds add up to a false-alarm probability.
P_VALUE_METHODS = ("ks", "chisquare", "z", "fisher_exact", "g_test", "mannw", "t_test", "anderson",
                   "cramer_von_mises", "es", "empirical_mmd")
DISTANCE_METHODS = ("wasserstein", "psi", "jensenshannon", "kl_div", "hellinger", "ed", "TVD")
DRIFT_COLUMNS = ("blur_score", "sku_similarity", "manipulation_score", "sticker_missing_score", "dirt_score",
                 "centring_offset", "prohibited", "decision")


class DriftColumn(_Strict):
    """One monitored column: Evidently's drift test, its threshold and whether drift here raises the alarm."""
    method: Literal[P_VALUE_METHODS + DISTANCE_METHODS]
    threshold: float = Field(gt=0.0)
    trigger: bool = False                   # drift here alerts and signals retrain (the others are reported only)

    @model_validator(mode="after")
    def _p_value(self):
        if self.method in P_VALUE_METHODS and not self.threshold < 1.0:
            raise ValueError(f"a p-value threshold ({self.method}) must be < 1")
        return self


class MonitoringParams(_Strict):
    """Drift of live scores against the reference, alerts, false-positive reports (monitoring/)."""
    reference: str                          # directory of the reference (reference.parquet + reference.json)
    reference_source: Literal["live_mix", "val"] = "live_mix"   # what production answers for the reference
    reports_dir: str                        # drift and fp reports: <reports_dir>/<date>/
    alerts: str                             # JSON lines, one per alert
    workspace: str                          # Evidently UI workspace (`evidently ui --workspace ...`)
    project: str = Field(min_length=1)      # the Evidently project of the reviewer
    window: str = Field(pattern=r"^[1-9][0-9]*[mhdw]$")   # default live window of `reviewops drift`
    min_rows: int = Field(ge=10)            # fewer live rows in the window: no verdict (insufficient data)
    false_alarm_budget: float = Field(gt=0.0, lt=1.0)    # per window: the trigger p-value thresholds sum to at most this
    columns: dict[str, DriftColumn]
    webhook_url: str | None = None          # POSTed the alert JSON on drift; null: no webhook
    webhook_timeout_s: float = Field(gt=0.0)
    fp_days: int = Field(gt=0)              # days of predictions the false-positive report covers
    fp_top: int = Field(ge=0)               # thumbnails of the top false positives per report
    thumbnail_px: int = Field(ge=32, le=512)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v):
        unknown = sorted(set(v) - set(DRIFT_COLUMNS))
        if unknown:
            raise ValueError(f"monitoring.columns: unknown column(s) {unknown}; known: {list(DRIFT_COLUMNS)}")
        if not any(c.trigger for c in v.values()):
            raise ValueError("monitoring.columns: at least one column must have trigger: true")
        return v

    @model_validator(mode="after")
    def _budget(self):
        # Bonferroni: P(any trigger column fires | no drift) <= sum of their p-value thresholds
        spent = sum(c.threshold for c in self.columns.values() if c.trigger and c.method in P_VALUE_METHODS)
        if spent > self.false_alarm_budget + 1e-12:
            raise ValueError(f"monitoring: the trigger columns' p-value thresholds sum to {spent:g}, above "
                             f"false_alarm_budget {self.false_alarm_budget:g}")
        return self


class Params(_Strict):
    seed: int = Field(ge=0)
    data: DataParams
    generator: GeneratorParams
    live_mix: LiveMixParams
    labels: LabelParams
    real_photos: RealPhotoParams
    prohibited: ProhibitedParams
    validation: ValidationParams
    train: TrainParams
    recall_targets: RecallTargets
    gate: GateParams
    serving: ServingParams
    active_learning: ActiveLearningParams
    monitoring: MonitoringParams

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


class ParamsError(ValueError):
    """params.yaml is missing, not YAML or not valid: the message names the file and every bad key."""


def load_params(path: str | Path | None = None) -> Params:
    path = Path(path) if path else default_params_path()
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    return _load(path.resolve(), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: Path, _mtime: int) -> Params:
    from pydantic import ValidationError

    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             + (f" (got {e['input']!r:.60})" if e["type"] not in ("missing",) and "input" in e
                                and not isinstance(e["input"], dict) else "")
                             for e in exc.errors())
        raise ParamsError(f"{path} is not valid: {problems}") from None
