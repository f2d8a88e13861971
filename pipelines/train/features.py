"""Frozen-trunk outputs, computed once per photo and cached on disk.

Every timm family trains its tail on the outputs of the frozen ImageNet trunk
(``pipelines.train.trunk``), so those outputs are a pure function of (photo bytes, input size, trunk
split, trunk weights). They are cached under ``.cache/trunk/`` (git-ignored, not a DVC output:
deleting it only costs time), keyed by the photo's SHA-256, and grow with new batches.

Large computations run the frozen stages on ONNX Runtime (exported once per trunk and cached as
``.onnx`` beside the features): on these CPUs it computes EfficientNet-Lite0's first stages 2.3-3.5x
faster per photo than eager torch did at batch 32, JPEG read included (``benchmarks/trunk_features.py``),
with the same numbers up to one float16 step of the cache. A handful of photos (the tests' tiny data) stays on eager torch,
where exporting would cost more than it saves.

On a GPU (``train.device`` resolving to cuda, :mod:`pipelines.train.device`) every pass runs the eager
torch trunk there, on a copy of the frozen stages (the caller's trunk stays where it is); ONNX Runtime
is the CPU path only. The cache is the same either way: float16 on the CPU, the same file and keys,
so features computed on one device are reused on the other (they agree up to a float16 step, as
ONNX Runtime and eager torch do).
"""

from __future__ import annotations

import copy
import hashlib
from functools import partial
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipelines.serve.images import crop_square, load_cropped, load_resized
from pipelines.train.device import normalise, resolve
from pipelines.train.onnx_export import export_dynamic_batch
from pipelines.train.trunk import Trunk, to_input

CACHE_DIR = Path(".cache/trunk")
ONNX_MIN_ROWS = 256   # from this many rows on, the frozen stages run on ONNX Runtime
BATCH = 8             # rows per forward: small batches keep the early stages' activations in cache
GPU_BATCH = 64        # rows per forward on a GPU (no cache argument there; not measured yet)
_SESSIONS: dict[str, object] = {}


def cache_file(trunk: Trunk, size: int, root: str | Path | None = None, split: int | None = None) -> Path:
    base = Path(root) if root is not None else Path.cwd()
    split = trunk.split if split is None else split
    return base / CACHE_DIR / f"split{split}-{size}px-{trunk.weights_digest()}.pt"


def _load(file: Path) -> tuple[dict[str, int], torch.Tensor | None]:
    if not file.exists():
        return {}, None
    blob = torch.load(file, map_location="cpu", weights_only=True)
    return {s: i for i, s in enumerate(blob["sha256"])}, blob["features"]


def _session(module: torch.nn.Module, example: torch.Tensor, file: Path):
    """An ONNX Runtime session of ``module`` (frozen, eval), exported to ``file`` once with a dynamic batch."""
    key = str(file)
    if key not in _SESSIONS:
        import onnxruntime as ort

        if not file.exists():
            export_dynamic_batch(module, example, file, "x", "y")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        _SESSIONS[key] = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def _on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` on ``device``: itself when it is there already (the CPU path), else a copy moved there."""
    here = next(iter(module.parameters()), None)
    if here is None or here.device == device:
        return module
    return copy.deepcopy(module).to(device).eval()


def _gpu(device: torch.device | None) -> bool:
    return device is not None and normalise(device).type != "cpu"


def _runner(module: torch.nn.Module, example: torch.Tensor, onnx_file: Path | None,
            device: torch.device | None = None):
    """``x -> module(x)`` in float32 on the CPU: ONNX Runtime when ``onnx_file`` is given, else eager torch
    (on ``device`` when that is a GPU)."""
    if _gpu(device):
        device = normalise(device)
        gpu_module = _on(module, device)
        return lambda x: gpu_module(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
    module = _on(module, torch.device("cpu"))       # itself, unless a caller left its trunk on a GPU
    if onnx_file is None:
        return lambda x: module(x.contiguous(memory_format=torch.channels_last))
    session = _session(module, example, onnx_file)
    return lambda x: torch.from_numpy(session.run(None, {"x": x.float().contiguous().numpy()})[0])


def crop_keys(sha256s: Sequence[str], boxes: Sequence, pad: float) -> list[str]:
    """The cache keys of product crops (:func:`pipelines.serve.images.product_crop`): the photo's SHA-256 when the
    crop is the whole photo, else a digest of it and the square read, so crops and whole photos share one cache."""
    keys = []
    for sha, box in zip(sha256s, boxes):
        square = crop_square(box, pad)
        keys.append(sha if square is None else
                    hashlib.sha256(f"{sha}:crop:{','.join(f'{v:.5f}' for v in square)}".encode()).hexdigest())
    return keys


@torch.no_grad()
def compute(trunk: Trunk, paths: Sequence[str | Path], size: int, batch_size: int = BATCH,
            desc: str = "trunk features", onnx_file: Path | None = None,
            device: torch.device | None = None, boxes: Sequence | None = None, pad: float = 1.0,
            prepare: Sequence | None = None) -> torch.Tensor:
    """Trunk outputs [N, C, H, W] (float16, on the CPU) of the photos at ``paths``, read and resized to ``size``
    (with ``boxes``: each photo's product crop around its box, ``pad`` times its side; with ``prepare``: one
    function per photo applied to it as decoded, :func:`pipelines.serve.images.load_resized`).

    With ``onnx_file`` the trunk runs on ONNX Runtime (exported there on first use); with a GPU
    ``device``, eager torch there (``onnx_file`` is then not used)."""
    trunk.eval()
    run = _runner(trunk, torch.zeros(2, 3, size, size), onnx_file, device)
    outs = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=len(paths) < batch_size) as bar:
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            how = None if prepare is None else prepare[i:i + batch_size]
            images = load_resized(chunk, size, prepare=how) if boxes is None else \
                load_cropped(chunk, boxes[i:i + batch_size], pad, size, prepare=how)
            outs.append(run(to_input(images, size)).to(torch.float16).contiguous())
            bar.update(len(chunk))
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.float16)


@torch.no_grad()
def array_features(trunk: Trunk, images: Sequence[np.ndarray] | np.ndarray, size: int, root: str | Path | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Trunk outputs [N, C, H, W] (float16, on the CPU, as the cache holds them) of in-memory uint8 RGB images (samples
    made per run, such as the real-photo ones of :mod:`pipelines.data.real_photos`: not cached). They run as
    :func:`trunk_features` runs the photos it lacks: ONNX Runtime in batches of :data:`BATCH` from
    :data:`ONNX_MIN_ROWS` images on (the same exported graph), eager torch below that or on a GPU ``device``."""
    trunk.eval()
    device = resolve(device) if isinstance(device, str) else device
    run = _runner(trunk, torch.zeros(2, 3, size, size), _onnx_file(trunk, size, root, len(images), device=device),
                  device)
    step = GPU_BATCH if _gpu(device) else BATCH
    outs = [run(to_input(images[i:i + step], size)).to(torch.float16).contiguous()
            for i in range(0, len(images), step)]
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.float16)


def _onnx_file(trunk: Trunk, size: int, root, rows: int, lower: int | None = None,
               device: torch.device | None = None) -> Path | None:
    """Where the exported graph of this computation lives, or None when ``rows`` are too few to export
    or the computation runs on a GPU (eager torch there)."""
    if rows < ONNX_MIN_ROWS or _gpu(device):
        return None
    base = Path(root) if root is not None else Path.cwd()
    span = f"split{trunk.split}" if lower is None else f"split{lower}to{trunk.split}"
    return base / CACHE_DIR / f"{span}-{size}px-{trunk.weights_digest()}.onnx"


@torch.no_grad()
def _from_lower(trunk: Trunk, shas: list[str], size: int, root,
                device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Outputs at the trunk's split for those of ``shas`` a cached lower split holds (running only the
    stages between); the rest must be computed from the photos."""
    found: dict[str, torch.Tensor] = {}
    for lower in range(trunk.split - 1, 0, -1):
        todo = [s for s in shas if s not in found]
        if not todo:
            break
        index, stored = _load(cache_file(trunk, size, root, split=lower))
        todo = [s for s in todo if s in index]
        if stored is None or not todo:
            continue
        rest = trunk.blocks[lower:].eval()
        rows = torch.as_tensor([index[s] for s in todo], dtype=torch.int64)
        run = _runner(rest, stored[rows[:2]].float(),
                      _onnx_file(trunk, size, root, len(rows), lower=lower, device=device), device)
        step = GPU_BATCH if _gpu(device) else BATCH
        for i in range(0, len(rows), step):
            out = run(stored[rows[i:i + step]].float())
            for s, f in zip(todo[i:i + step], out.to(torch.float16)):
                found[s] = f.contiguous()
    return found


def trunk_features(trunk: Trunk, paths: Sequence[str | Path], sha256s: Sequence[str], size: int,
                   root: str | Path | None = None, device: torch.device | str | None = None,
                   boxes: Sequence | None = None, pad: float = 1.0, view=None) -> torch.Tensor:
    """Trunk outputs [N, C, H, W] (float16, on the CPU) for the photos, in order; only unseen photos are
    computed, on ``device`` (None: the CPU, ONNX Runtime for many rows). A string is a ``train.device``
    setting, resolved only when a photo must be computed: reading a full cache needs no GPU.

    ``boxes`` (one normalised product box or None per photo): the outputs of each photo's product crop
    (:func:`pipelines.serve.images.product_crop`, ``pad``), cached under :func:`crop_keys`.

    ``view`` (a :class:`pipelines.train.camera.CameraView`): the outputs of each photo as that camera view makes it
    (before any crop), cached under ``view.key`` of the photo's key."""
    if len(paths) != len(sha256s):
        raise ValueError("paths and sha256s differ in length")
    if boxes is not None:
        if len(boxes) != len(paths):
            raise ValueError("paths and boxes differ in length")
        sha256s = crop_keys(sha256s, boxes, pad)
    if view is not None:
        sha256s = [view.key(s) for s in sha256s]
    file = cache_file(trunk, size, root)
    index, stored = _load(file)
    missing = list(dict.fromkeys(s for s in sha256s if s not in index))
    if missing:
        device = resolve(device) if isinstance(device, str) else device
        first = {s: p for p, s in zip(paths, sha256s)}
        box_of = {} if boxes is None else {s: b for s, b in zip(sha256s, boxes)}
        derived = _from_lower(trunk, missing, size, root, device)
        fresh = [s for s in missing if s not in derived]
        computed = compute(trunk, [first[s] for s in fresh], size, GPU_BATCH if _gpu(device) else BATCH,
                           desc=f"trunk features {size}px split {trunk.split}",
                           onnx_file=_onnx_file(trunk, size, root, len(fresh), device=device),
                           device=device, boxes=None if boxes is None else [box_of[s] for s in fresh],
                           pad=pad, prepare=None if view is None else [partial(view, key=s) for s in fresh]) \
            if fresh else None
        by_sha = {**derived, **({s: computed[i] for i, s in enumerate(fresh)} if fresh else {})}
        new = torch.stack([by_sha[s] for s in missing])
        stored = new if stored is None else torch.cat([stored, new])
        for s in missing:
            index[s] = len(index)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        order = sorted(index, key=index.get)
        torch.save({"sha256": order, "features": stored}, tmp)
        tmp.replace(file)
    return stored[torch.as_tensor(np.array([index[s] for s in sha256s], dtype=np.int64))]
