"""Stage `generate`: write a batch of procedural listing photos and their labels manifest.

    reviewops generate --n 500 --seed 7 --batch b1 --out data/incoming --shift blur_rate=0.6,lighting=dark

The batch is deterministic for (seed, params, shift): photo i is rendered from the stream
(seed, i), so the worker count never changes a byte. It is written to a temporary directory and
renamed into place at the end, so a crash never leaves half a batch where a reader would look.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipelines.data.manifest import IMAGES_DIR, read_photos, write_manifest
from pipelines.params import GeneratorParams, Params, load_params
from pipelines.data.synth.scene import SceneConfig, render_photo


def parse_shift(text: str | None) -> dict[str, str]:
    """``"blur_rate=0.6,lighting=dark"`` -> ``{"blur_rate": "0.6", "lighting": "dark"}``."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --shift item {part!r}: expected key=value, e.g. blur_rate=0.6,lighting=dark")
        out[key.strip()] = value.strip()
    return out


def shifted(gen: GeneratorParams, shift: dict[str, str] | None) -> GeneratorParams:
    """Generator params with drift-simulation overrides, validated like params.yaml itself."""
    if not shift:
        return gen
    unknown = sorted(set(shift) - set(GeneratorParams.model_fields))
    if unknown:
        raise ValueError(f"unknown shift knob(s) {unknown}; known: {sorted(GeneratorParams.model_fields)}")
    merged = gen.model_dump()
    for key, value in shift.items():
        merged[key] = [int(v) for v in value.split("-")] if key == "jpeg_quality" else value
    return GeneratorParams.model_validate(merged)


LIVE_MIX_DIR = Path(".reviewops/live_mix")   # under a project: live-mix samples (reviewer stage, drift reference)


def live_mix_shift(params: Params) -> dict[str, str]:
    """The live traffic mix (``live_mix.rates``) as generator overrides."""
    return {k: str(v) for k, v in params.live_mix.rates.items()}


def cached_batch(out_dir: str | Path, prefix: str, n: int, seed: int, params: Params, shift: dict[str, str],
                 *, categories: list[str] | None = None, progress: bool = False) -> Path:
    """``n`` photos of the generator under ``shift`` in ``out_dir/<prefix>-<digest>``, rendered once: the digest
    covers everything that determines them (count, seed, shift, generator, labels, categories, size).
    ``categories``: the prohibited items drawn (default ``prohibited.categories``; [] draws none)."""
    categories = list(params.prohibited.categories if categories is None else categories)
    key = hashlib.sha256(json.dumps([n, seed, shift, params.generator.model_dump(), params.labels.model_dump(),
                                     categories, params.data.image_size],
                                    sort_keys=True).encode()).hexdigest()[:10]
    dest = Path(out_dir) / f"{prefix}-{key}"
    if (dest / "manifest.parquet").is_file():
        return dest
    return generate_batch(out_dir, dest.name, n, seed, params, shift, categories=categories, progress=progress)


def live_mix_batch(out_dir: str | Path, params: Params, *, n: int | None = None, seed: int | None = None,
                   progress: bool = False) -> Path:
    """A sample of the live mix in ``out_dir`` (rendered once: same params, size and seed give the same batch)."""
    n = n or params.live_mix.n.get(params.train.profile, max(params.live_mix.n.values()))
    seed = params.live_mix.seed if seed is None else seed
    return cached_batch(out_dir, "live-mix", n, seed, params, live_mix_shift(params), progress=progress)


ENRICHED_DIR = Path(".reviewops/enriched")  # under a project: extra photos of a family, to train on or to set a threshold
                                            # with (never in a reported figure)


def enriched_photos(root: str | Path, params: Params, family: str, n: int, rates: dict[str, float], salt: int,
                    *, prohibited: bool = False, progress: bool = False) -> pd.DataFrame:
    """``n`` extra training photos for ``family``, the generator's rates overridden by ``rates`` (its defects made
    common), rendered once under the project's ``.reviewops/enriched``; the manifest's rows with their paths.
    Their seed is ``seed * 1000 + salt``: no versioned batch shares their streams. They show no prohibited item
    (the versioned photos do), so the prohibited category list does not change them: a new category retrains
    that category only. ``prohibited``: they draw ``prohibited.categories`` as the versioned photos do (photos
    that set a threshold, which should look like the photos the recall is measured on)."""
    batch = cached_batch(Path(root) / ENRICHED_DIR, family, n, params.seed * 1000 + salt, params,
                         {k: str(v) for k, v in rates.items()}, categories=None if prohibited else [],
                         progress=progress)
    return read_photos(batch)


_CFG: SceneConfig | None = None


def _init(cfg: SceneConfig) -> None:
    global _CFG
    _CFG = cfg
    import cv2

    cv2.setNumThreads(1)


def _render(args: tuple[int, int, str, str]) -> dict:
    seed, index, listing_id, path = args
    jpeg, rec = render_photo(seed, index, _CFG)
    with open(path, "wb") as fh:
        fh.write(jpeg)
    rec.update(listing_id=listing_id, sha256=hashlib.sha256(jpeg).hexdigest(), bytes=len(jpeg))
    return rec


def generate_batch(out_dir: str | Path, batch_id: str, n: int, seed: int, params: Params | None = None,
                   shift: dict[str, str] | None = None, workers: int | None = None,
                   progress: bool = False, categories: list[str] | None = None) -> Path:
    """Render ``n`` photos into ``out_dir/batch_id`` (images/ + manifest.parquet); return that path.
    ``categories``: the prohibited items that may be drawn (default ``prohibited.categories``; [] none)."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not batch_id or "/" in batch_id or batch_id.startswith("."):
        raise ValueError(f"bad batch id {batch_id!r}")
    params = params or load_params()
    cfg = SceneConfig(params.data.image_size, shifted(params.generator, shift), params.labels,
                      tuple(params.prohibited.categories if categories is None else categories))
    dest = Path(out_dir) / batch_id
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another batch id or remove it")
    tmp = Path(out_dir) / f".{batch_id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / IMAGES_DIR).mkdir(parents=True)
    jobs = [(seed, i, f"{batch_id}-{i:06d}", str(tmp / IMAGES_DIR / f"{batch_id}-{i:06d}.jpg")) for i in range(n)]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=n, desc=f"generate {batch_id}", unit="photo", disable=not progress)
    try:
        if workers == 1:
            _init(cfg)
            records = []
            for job in jobs:
                records.append(_render(job))
                bar.update()
        else:
            # spawn, not fork: a fork after OpenCV or torch started threads in this process can deadlock
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init, initargs=(cfg,)) as pool:
                records = []
                for rec in pool.map(_render, jobs, chunksize=16):
                    records.append(rec)
                    bar.update()
        bar.close()
        df = pd.DataFrame(records)
        df["batch"] = batch_id
        df["image"] = [f"{IMAGES_DIR}/{lid}.jpg" for lid in df.listing_id]
        df["seed"] = seed
        write_manifest(df, tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def measure_speed(n: int = 300, seed: int = 0, params: Params | None = None) -> float:
    """Photos per second on one core, rendering and JPEG-encoding (no disk)."""
    params = params or load_params()
    cfg = SceneConfig(params.data.image_size, params.generator, params.labels, params.prohibited.categories)
    for i in range(10):
        render_photo(seed, i, cfg)
    start = time.perf_counter()
    for i in range(n):
        render_photo(seed, 10 + i, cfg)
    return n / (time.perf_counter() - start)
