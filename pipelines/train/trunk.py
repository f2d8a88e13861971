"""Transfer learning on the ImageNet EfficientNet-Lite0: a frozen trunk and trainable tails.

A family's network is ``trunk -> tail -> head``. The trunk (stem and the first ``split`` stages of
``tf_efficientnet_lite0`` with the package's ImageNet weights, or random weights when
``pretrained`` is off) is frozen; the tail (a fresh copy of the remaining stages and the 1x1 head
conv, initialised from the same weights) and the family's head are trained.

Why frozen: it is what makes CPU training affordable (trunk outputs are computed once and cached,
see ``pipelines.train.features``), and it lets independent classifiers share one trunk forward at serving
time without sharing a single trainable parameter (the prohibited-item family relies on it).
"""

from __future__ import annotations

import copy
import hashlib
import math

import torch
from torch import nn

from pipelines.serve.images import to_array
from pipelines.train.backbone import create_backbone

NUM_STAGES = 7
INPUT_FILTERS = ("none", "residual")


class Residual(nn.Module):
    """The photo's fine residual: the input minus its Gaussian blur (``sigma`` px), scaled per photo to a standard
    deviation of 0.5 (a normalised photo's): what is left is the grain, the JPEG blocks and the edges, at the same
    level in every photo whatever its texture (real photos carry about twice the generated ones' residual energy).

    For a check that should read how a photo was made rather than what it shows (manipulation): the trunk's ImageNet
    features of the photo itself let the net know scenes it trained on, and call every other one edited."""

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        radius = max(1, int(round(3 * sigma)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-t ** 2 / (2 * sigma ** 2))
        g = g / g.sum()
        self.radius = radius
        self.register_buffer("kernel", (g[:, None] * g[None, :]).expand(3, 1, -1, -1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = nn.functional.pad(x, (self.radius,) * 4, mode="reflect")
        r = x - nn.functional.conv2d(pad, self.kernel, groups=3)
        return r * (0.5 / (r.flatten(1).std(dim=1) + 1e-4)).view(-1, 1, 1, 1)


def to_input(rgbs, size: int) -> torch.Tensor:
    """The trunk's input: :func:`pipelines.serve.images.to_array` (the one normalisation) as a tensor."""
    return torch.from_numpy(to_array(rgbs, size))


class Trunk(nn.Module):
    """Stem + stages ``[0, split)``; always in eval mode, never trained."""

    def __init__(self, split: int, pretrained: bool = True, input_filter: str = "none"):
        super().__init__()
        if not 0 <= split <= NUM_STAGES:
            raise ValueError(f"trunk split must be in [0, {NUM_STAGES}], got {split}")
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"input filter must be one of {INPUT_FILTERS}, got {input_filter!r}")
        net = create_backbone(pretrained=pretrained, num_classes=0)
        self.split, self.pretrained, self.input_filter = split, pretrained, input_filter
        self.stem = nn.Sequential(*([Residual()] if input_filter == "residual" else []), net.conv_stem, net.bn1)
        self.blocks = nn.Sequential(*net.blocks[:split])
        self._rest = net  # the source of every tail's initial weights (not a submodule of the forward)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D401 - a frozen trunk never leaves eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def weights_digest(self) -> str:
        """Digest of the whole backbone the trunk was cut from and of its input filter: equal for every split of the
        same weights and filter (the feature cache and serving's shared trunk stages are keyed by it)."""
        h = hashlib.sha256()
        if self.input_filter != "none":
            h.update(f"input_filter={self.input_filter}".encode())
        for k, v in sorted(self._rest.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:12]

    def stages(self) -> list[nn.Module]:
        """The trunk as its stages, each a module of the previous one's output: stem + stage 0, then stages
        1 .. split - 1. Chained, they compute ``forward``; serving runs each stage once per photo for every
        family whose trunk holds it (:mod:`pipelines.serve.models`)."""
        return [nn.Sequential(*self.stem, self.blocks[0])] + [self.blocks[k] for k in range(1, self.split)]

    def new_tail(self, stages: int | None = None, pooling: str = "mean_max") -> nn.Module:
        """A fresh trainable tail: every remaining stage (``stages=None``) or a light one (see ``LightTail``, whose
        ``pooling`` it takes)."""
        if stages is None:
            if pooling != "mean_max":
                raise ValueError(f"pooling {pooling!r} needs a light tail (tail_stages set)")
            return Tail(self._rest, self.split)
        return LightTail(self._rest, self.split, stages, pooling)

    def out_channels(self) -> int:
        return 32 if self.split == 0 else self.blocks[-1][-1].conv_pwl.out_channels \
            if hasattr(self.blocks[-1][-1], "conv_pwl") else self.blocks[-1][-1].conv_pw.out_channels

    def state_dict(self, *args, **kwargs):  # the donor network is not part of the trunk's weights
        sd = super().state_dict(*args, **kwargs)
        return type(sd)((k, v) for k, v in sd.items() if not k.startswith("_rest."))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {k: v for k, v in super().state_dict().items() if k.startswith("_rest.")}
        return super().load_state_dict({**own, **state_dict}, strict=strict, assign=assign)


class Tail(nn.Module):
    """Stages ``[split, 7)`` + head conv + global average pool: pooled 1280-d features."""

    num_features = 1280

    def __init__(self, donor: nn.Module, split: int):
        super().__init__()
        self.blocks = copy.deepcopy(nn.Sequential(*donor.blocks[split:]))
        self.conv_head = copy.deepcopy(donor.conv_head)
        self.bn2 = copy.deepcopy(donor.bn2)
        self.requires_grad_(True)

    def spatial(self, f: torch.Tensor) -> torch.Tensor:
        """The head's map before pooling: (n, 1280, h, w)."""
        return self.bn2(self.conv_head(self.blocks(f)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.spatial(f).mean((2, 3))


POOLED_FEATURES = {"mean_max": 512, "contrast": 256, "local": 1}   # each light-tail pooling's output width
POOLINGS = tuple(POOLED_FEATURES)
LOCAL_SHARPNESS = 4.0     # the log-sum-exp pooling's r: 0 is the average of the places' logits, infinity their maximum


class LightTail(nn.Module):
    """The next ``stages`` stages only, a 1x1 conv to 256 channels, then pooled over the photo.

    ``pooling="mean_max"``: average and max pooling side by side (512-d). For low-level checks (blur, edits) read at
    full resolution: max pooling keeps the strongest local evidence (a sharp edge, a seam) that an average over the
    photo would wash out.

    ``pooling="contrast"``: per channel, the maximum less the average (256-d): how much the strongest place stands out
    from the rest of the same photo. What a whole scene looks like (a kind of scene never trained on, a camera's
    texture) raises every place alike and cancels; an edit is local. The head cannot read the photo's overall look.

    ``pooling="local"``: a logit for every place of the photo (a 1x1 conv), pooled by log-sum-exp (``LOCAL_SHARPNESS``,
    between their average and their maximum; 1-d): multiple-instance learning. An edited photo needs one place that
    looks edited, an unedited photo none, so a texture that unedited real photos show everywhere is pushed down at every
    place, also where it surrounds an edit; the answer cannot rest on what the whole photo looks like.
    """

    def __init__(self, donor: nn.Module, split: int, stages: int, pooling: str = "mean_max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.num_features = POOLED_FEATURES[pooling]
        self.blocks = copy.deepcopy(nn.Sequential(*donor.blocks[split:split + stages]))
        last = donor.blocks[split + stages - 1][-1] if stages else None
        channels = (last.conv_pwl.out_channels if hasattr(last, "conv_pwl") else last.conv_pw.out_channels) \
            if last is not None else donor.blocks[split - 1][-1].conv_pwl.out_channels
        self.proj = nn.Sequential(nn.Conv2d(channels, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6(inplace=True))
        if pooling == "local":
            self.drop, self.local = nn.Dropout(0.2), nn.Conv2d(256, 1, 1)
        self.requires_grad_(True)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = self.proj(self.blocks(f))
        if self.pooling == "contrast":
            return z.amax((2, 3)) - z.mean((2, 3))
        if self.pooling == "local":
            places = self.local(self.drop(z)).flatten(1) * LOCAL_SHARPNESS
            return (torch.logsumexp(places, 1, keepdim=True) - math.log(places.shape[1])) / LOCAL_SHARPNESS
        return torch.cat([z.mean((2, 3)), z.amax((2, 3))], dim=1)


class TrunkNet(nn.Module):
    """``head(tail(trunk(x)))`` as one module: what is saved, exported and served."""

    def __init__(self, trunk: Trunk, tail: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk, self.tail, self.head = trunk, tail, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(self.trunk(x)))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(f))
