"""Frozen-trunk outputs, computed once per photo and cached on disk.

Every timm family trains its tail on the outputs of the frozen ImageNet trunk
(``pipelines.trunk``), so those outputs are a pure function of (photo bytes, input size, trunk
split, trunk weights). They are cached under ``.cache/trunk/`` (git-ignored, not a DVC output:
deleting it only costs time), keyed by the photo's SHA-256, and grow with new batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .images import load_resized, to_input
from .trunk import Trunk

CACHE_DIR = Path(".cache/trunk")


def _weights_digest(trunk: Trunk) -> str:
    """Digest of the whole backbone the trunk was cut from: equal for every split of the same weights."""
    h = hashlib.sha256()
    for k, v in sorted(trunk._rest.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_file(trunk: Trunk, size: int, root: str | Path | None = None, split: int | None = None) -> Path:
    base = Path(root) if root is not None else Path.cwd()
    split = trunk.split if split is None else split
    return base / CACHE_DIR / f"split{split}-{size}px-{_weights_digest(trunk)}.pt"


def _load(file: Path) -> tuple[dict[str, int], torch.Tensor | None]:
    if not file.exists():
        return {}, None
    blob = torch.load(file, map_location="cpu", weights_only=True)
    return {s: i for i, s in enumerate(blob["sha256"])}, blob["features"]


@torch.no_grad()
def compute(trunk: Trunk, paths: Sequence[str | Path], size: int, batch_size: int = 32,
            desc: str = "trunk features") -> torch.Tensor:
    """Trunk outputs [N, C, H, W] (float16) of the photos at ``paths``, read and resized to ``size``."""
    trunk.eval()
    outs = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=len(paths) < batch_size) as bar:
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            x = to_input(load_resized(chunk, size), size).contiguous(memory_format=torch.channels_last)
            outs.append(trunk(x).to(torch.float16).contiguous())
            bar.update(len(chunk))
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.float16)


@torch.no_grad()
def _from_lower(trunk: Trunk, shas: list[str], size: int, root) -> dict[str, torch.Tensor]:
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
        rest = trunk.blocks[lower:]
        rows = torch.as_tensor([index[s] for s in todo], dtype=torch.int64)
        for i in range(0, len(rows), 256):
            out = rest(stored[rows[i:i + 256]].float().contiguous(memory_format=torch.channels_last))
            for s, f in zip(todo[i:i + 256], out.to(torch.float16)):
                found[s] = f.contiguous()
    return found


def trunk_features(trunk: Trunk, paths: Sequence[str | Path], sha256s: Sequence[str], size: int,
                   root: str | Path | None = None) -> torch.Tensor:
    """Trunk outputs [N, C, H, W] (float16) for the photos, in order; only unseen photos are computed."""
    if len(paths) != len(sha256s):
        raise ValueError("paths and sha256s differ in length")
    file = cache_file(trunk, size, root)
    index, stored = _load(file)
    missing = list(dict.fromkeys(s for s in sha256s if s not in index))
    if missing:
        first = {s: p for p, s in zip(paths, sha256s)}
        derived = _from_lower(trunk, missing, size, root)
        fresh = [s for s in missing if s not in derived]
        computed = compute(trunk, [first[s] for s in fresh], size, desc=f"trunk features {size}px split {trunk.split}") \
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
