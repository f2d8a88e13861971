"""Pretrained (frozen ImageNet trunk, trained tail) against from scratch (the same network, every
weight trained from random init), for the blur regressor, on the same photos and the same harness.

Usage (in a project with versioned demo data, e.g. after `make demo`):

    .venv/bin/python benchmarks/pretrained_vs_scratch.py --repo . --train 800 --scratch-epochs 3

Both arms use the blur family's network (EfficientNet-Lite0 stem + stages 0-2 -> stage 3 -> 1x1
conv -> avg+max pool -> logit) at 256 px. "pretrained" freezes the ImageNet stem and stages 0-2 and
trains the rest on cached trunk outputs (what `reviewops train blur` does); "scratch" starts every
weight at random and trains all of them on the photos. Measured on the frozen test split (Spearman
against the annotator score) and on scikit-image's real photos blurred at growing sigma.
Writes benchmarks/results/pretrained_vs_scratch.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import Dataset

from pipelines.data.dataset import split_frame, versioned_manifest
from pipelines.train.families import common
from pipelines.train.families.blur import usable
from pipelines.train.families.scalar import build, random_crop
from pipelines.train.harness import FitConfig, fit
from pipelines.serve.images import load_resized
from pipelines.train.trunk import to_input
from pipelines.params import load_params

OUT = Path(__file__).parent / "results" / "pretrained_vs_scratch.json"


class Photos(Dataset):
    def __init__(self, images: np.ndarray, y: np.ndarray):
        self.images, self.y = images, torch.as_tensor(y, dtype=torch.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return to_input(self.images[i], self.images.shape[1])[0], self.y[i]


# The series this benchmark was run with (scikit-image photos: the generator's own material, so confounded; the
# project's real-photo check is pipelines/release/real_photos.py).
REAL_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png",
               "camera.png", "brick.png")
REAL_SIGMAS = (0.0, 0.75, 1.5, 2.5, 4.0)


def real_photo_series(size: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """scikit-image's real photos, centre-cropped to ``size``, Gaussian-blurred at growing sigma, JPEG q90."""
    from pipelines.data.synth.backgrounds import real_image

    photos, sigmas, ids = [], [], []
    for k, name in enumerate(REAL_PHOTOS):
        rgb = (real_image(name) * 255).astype(np.uint8)
        h, w = rgb.shape[:2]
        side = min(h, w)
        crop = cv2.resize(rgb[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2], (size, size),
                          interpolation=cv2.INTER_AREA)
        for sigma in REAL_SIGMAS:
            img = cv2.GaussianBlur(crop, (0, 0), sigma) if sigma > 0 else crop
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            photos.append(cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
            sigmas.append(sigma)
            ids.append(k)
    return photos, np.array(sigmas), np.array(ids)


def _spearman(a, b) -> float:
    return float(spearmanr(a, b).statistic)


def real_photo_score(net, size: int) -> float:
    photos, sigmas, ids = real_photo_series(size)
    with torch.no_grad():
        pred = torch.sigmoid(net(to_input(photos, size))).numpy()
    return float(np.mean([_spearman(sigmas[ids == k], pred[ids == k]) for k in np.unique(ids)]))


def run(repo: Path, n_train: int, n_val: int, pre_epochs: int, scratch_epochs: int) -> dict:
    params = load_params(repo / "params.yaml")
    settings = params.train.blur
    size = params.train.input_size("blur")
    df = versioned_manifest(repo)
    rng = np.random.default_rng(0)
    pick = lambda d, n: d.iloc[np.sort(rng.choice(len(d), size=min(n, len(d)), replace=False))].reset_index(drop=True)
    train, val = pick(usable(split_frame(df, "train")), n_train), pick(usable(split_frame(df, "val")), n_val)
    test = usable(split_frame(df, "test"))
    results = {"photos": {"train": len(train), "val": len(val), "test": len(test)}, "image_size": size}
    arch = {"trunk_split": settings.trunk_split, "tail_stages": settings.tail_stages, "image_size": size}

    # pretrained: frozen ImageNet trunk, tail trained on cached trunk outputs (the shipped recipe)
    net = build({**arch, "pretrained": True})
    start = time.perf_counter()
    xs = {k: common.features(repo, params, net.trunk, d, size=size) for k, d in (("train", train), ("val", val), ("test", test))}
    cache_s = time.perf_counter() - start

    def loss_pre(m, b):
        x, y = b
        return nn.functional.mse_loss(torch.sigmoid(m.from_features(random_crop(x, settings.train_crop))), y)

    score_pre = lambda m, _: _spearman(torch.sigmoid(common.predict(m.from_features, xs["val"])).numpy(), val["blur_score"])
    cfg = FitConfig(max_epochs=pre_epochs, patience=pre_epochs, lr=settings.lr, weight_decay=settings.weight_decay,
                    batch_size=settings.batch_size, seed=1, threads=params.train.threads)
    res = fit(net, common.Tensors(xs["train"], torch.as_tensor(train["blur_score"].to_numpy(np.float32))), [],
              loss_pre, score_pre, cfg, repo / ".cache" / "bench" / "pretrained", name="pretrained",
              params=list(net.tail.parameters()) + list(net.head.parameters()))
    pred = torch.sigmoid(common.predict(net.from_features, xs["test"])).numpy()
    results["pretrained"] = {"test_spearman": _spearman(pred, test["blur_score"]), "real_photos_spearman": real_photo_score(net, size),
                             "train_seconds": round(res.seconds + cache_s, 1), "epochs": res.epochs_run,
                             "trunk_cache_seconds": round(cache_s, 1)}

    # scratch: the same network, every weight random and trained, on the photos themselves
    torch.manual_seed(1)
    net = build({**arch, "pretrained": False})
    net.trunk.requires_grad_(True)
    net.trunk.train = nn.Module.train.__get__(net.trunk)  # a trunk trained from scratch must leave eval mode
    imgs = {k: load_resized(list(d["path"]), size) for k, d in (("train", train), ("val", val), ("test", test))}

    def loss_scratch(m, b):
        x, y = b
        return nn.functional.mse_loss(torch.sigmoid(m(x.contiguous(memory_format=torch.channels_last))), y)

    def predict_images(m, images):
        m.eval()
        with torch.no_grad():
            return np.concatenate([torch.sigmoid(m(to_input(images[i:i + 64], size))).numpy() for i in range(0, len(images), 64)])

    score_scratch = lambda m, _: _spearman(predict_images(m, imgs["val"]), val["blur_score"])
    cfg = FitConfig(max_epochs=scratch_epochs, patience=scratch_epochs, lr=settings.lr, weight_decay=settings.weight_decay,
                    batch_size=32, seed=1, threads=params.train.threads)
    res = fit(net, Photos(imgs["train"], train["blur_score"].to_numpy(np.float32)), [], loss_scratch, score_scratch,
              cfg, repo / ".cache" / "bench" / "scratch", name="scratch", params=list(net.parameters()))
    results["scratch"] = {"test_spearman": _spearman(predict_images(net, imgs["test"]), test["blur_score"]),
                          "real_photos_spearman": real_photo_score(net.eval(), size),
                          "train_seconds": round(res.seconds, 1), "epochs": res.epochs_run}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--pretrained-epochs", type=int, default=8)
    ap.add_argument("--scratch-epochs", type=int, default=3)
    a = ap.parse_args()
    import shutil
    shutil.rmtree(a.repo / ".cache" / "bench", ignore_errors=True)
    res = run(a.repo.resolve(), a.train, a.val, a.pretrained_epochs, a.scratch_epochs)
    res["command"] = (f".venv/bin/python benchmarks/pretrained_vs_scratch.py --repo <demo project> --train {a.train} "
                      f"--val {a.val} --pretrained-epochs {a.pretrained_epochs} --scratch-epochs {a.scratch_epochs}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
