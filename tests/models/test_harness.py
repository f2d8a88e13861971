"""The shared training loop on real generated photos: it learns, checkpoints, resumes exactly and stops early."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.data.generate import generate_batch
from pipelines.train.harness import FitConfig, fit, seed_everything
from pipelines.data.manifest import read_manifest


class BlurPhotos(Dataset):
    def __init__(self, batch_dir, rows):
        self.x = [torch.from_numpy(cv2.resize(cv2.imread(str(batch_dir / r.image)), (48, 48),
                                              interpolation=cv2.INTER_AREA)).permute(2, 0, 1).float() / 255
                  for r in rows.itertuples()]
        self.y = torch.tensor(rows.blur_score.to_numpy(), dtype=torch.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    batch = generate_batch(tmp_path_factory.mktemp("h"), "h1", 64, seed=21, workers=1)
    df = read_manifest(batch)
    return BlurPhotos(batch, df.iloc[:48]), BlurPhotos(batch, df.iloc[48:])


def _model():
    seed_everything(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=1)


def _loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(torch.sigmoid(model(x).squeeze(1)), y)


def _neg_mse(model, loader):
    return -float(np.mean([_loss(model, b).item() for b in loader]))


CFG = FitConfig(max_epochs=4, patience=10, lr=1e-3, batch_size=16, seed=3, progress=False)


def test_fit_writes_checkpoints_and_keeps_the_best(data, tmp_path):
    train, val = data
    model = _model()
    res = fit(model, train, DataLoader(val, batch_size=16), _loss, _neg_mse, CFG, tmp_path, name="blur")
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    assert res.epochs_run == 4 and len(res.history) == 4
    assert res.best_score == max(h["val_score"] for h in res.history)
    assert _neg_mse(model.eval(), DataLoader(val, batch_size=16)) == pytest.approx(res.best_score, abs=1e-6)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(data, tmp_path, ema_decay):
    train, val = data
    loader = DataLoader(val, batch_size=16)
    cfg = FitConfig(**{**CFG.__dict__, "ema_decay": ema_decay})
    fit(_model(), train, loader, _loss, _neg_mse, cfg, tmp_path / "straight")
    calls = []

    def crash_in_epoch_3(model, val_loader):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("machine lost")
        return _neg_mse(model, val_loader)

    with pytest.raises(RuntimeError, match="machine lost"):
        fit(_model(), train, loader, _loss, crash_in_epoch_3, cfg, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["state"]["epoch"] == 2
    fit(_model(), train, loader, _loss, _neg_mse, cfg, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    assert b["state"]["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    best_a, best_b = (torch.load(tmp_path / run / "best.pt", weights_only=True) for run in ("straight", "resumed"))
    assert best_a["epoch"] == best_b["epoch"]
    for k in best_a["model"]:                        # with ema_decay: the average resumed, not restarted
        assert torch.equal(best_a["model"][k], best_b["model"][k]), k


def test_the_weight_average_is_what_validation_scores_and_the_checkpoint_keeps(tmp_path):
    """With ema_decay the best checkpoint holds the moving average of the weights after each step (warm-up
    decay min(ema_decay, (1 + t) / (10 + t))), computed here by hand from the weights the loss saw."""
    torch.manual_seed(0)
    x, y = torch.randn(48, 5), torch.randn(48)
    train = torch.utils.data.TensorDataset(x, y)
    model = torch.nn.Linear(5, 1)
    seen = []                                        # the weights before each step

    def loss(m, batch):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        xb, yb = batch
        return torch.nn.functional.mse_loss(m(xb).squeeze(1), yb)

    scored = []

    def score(m, _loader):
        scored.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return 0.0

    cfg = FitConfig(max_epochs=1, patience=5, lr=0.1, batch_size=16, seed=1, progress=False, ema_decay=0.5)
    fit(model, train, [], loss, score, cfg, tmp_path)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    raw = [*seen[1:], last["model"]]                 # the weights after steps 1, 2, 3
    assert len(raw) == 3
    expected = {k: v.clone() for k, v in seen[0].items()}
    for t, w in enumerate(raw, start=1):
        decay = min(0.5, (1 + t) / (10 + t))
        expected = {k: decay * expected[k] + (1 - decay) * w[k] for k in expected}
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    for k in expected:
        assert torch.allclose(best[k], expected[k], atol=1e-6), k
        assert torch.allclose(scored[0][k], expected[k], atol=1e-6), k   # validation scored the average
        assert torch.allclose(final[k], expected[k], atol=1e-6), k       # and the model ends with it
        assert not torch.allclose(expected[k], last["model"][k], atol=1e-4), k  # not the raw weights
    assert last["average"]["steps"] == 3


def test_stops_early_when_validation_stops_improving(data, tmp_path):
    train, val = data
    scores = iter([0.5, 0.6, 0.55, 0.54, 0.53, 0.52, 0.51])
    res = fit(_model(), train, [], _loss, lambda m, l: next(scores),
              FitConfig(**{**CFG.__dict__, "max_epochs": 7, "patience": 2}), tmp_path)
    assert res.stopped_early and res.best_epoch == 2 and res.epochs_run == 4  # two epochs without gain


def test_reaching_the_score_ceiling_stops_with_the_same_model(data, tmp_path):
    """best_possible ends training at the first epoch that reaches it, and keeps the very model a
    run without the ceiling keeps (a later epoch can tie the ceiling, never beat it)."""
    train, val = data
    runs = {}
    for ceiling in (None, 1.0):
        scores = iter([0.9, 1.0, 1.0, 0.8])
        model = _model()
        res = fit(model, train, [], _loss, lambda m, l: next(scores),
                  FitConfig(**{**CFG.__dict__, "max_epochs": 4, "patience": 10, "best_possible": ceiling}),
                  tmp_path / str(ceiling))
        runs[ceiling] = (res, model.state_dict())
    (full, w_full), (short, w_short) = runs[None], runs[1.0]
    assert (full.epochs_run, full.stopped_early) == (4, False)
    assert (short.epochs_run, short.stopped_early, short.best_epoch) == (2, True, 2) and full.best_epoch == 2
    assert all(torch.equal(w_full[k], w_short[k]) for k in w_full)


def test_resume_with_other_settings_is_refused(data, tmp_path):
    train, val = data
    fit(_model(), train, [], _loss, lambda m, l: 0.0, FitConfig(max_epochs=1, progress=False), tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        fit(_model(), train, [], _loss, lambda m, l: 0.0, FitConfig(max_epochs=1, lr=1.0, progress=False), tmp_path)


def test_balanced_batches_are_half_positives_seeded_per_epoch_and_refuse_one_class():
    from pipelines.train.families.common import NoData, balanced_batches

    labels = np.zeros(200, dtype=np.float32)
    labels[[3, 50, 120, 199]] = 1.0                     # 2% positives, as edited photos are in the live mix
    sampler = balanced_batches(labels, batch_size=16, seed=5)
    epoch0 = sampler(0)
    assert len(epoch0) == 200 // 16 and all(len(b) == 16 for b in epoch0)
    for batch in epoch0:
        assert labels[batch].sum() == 8, batch          # half of every batch is a positive
    negatives = [i for b in epoch0 for i in b if labels[i] == 0]
    assert len(negatives) == len(set(negatives))         # negatives without replacement within an epoch
    assert sampler(0) == epoch0 and sampler(1) != epoch0  # a function of (seed, epoch): resumable
    assert balanced_batches(labels, 16, seed=6)(0) != epoch0
    with pytest.raises(NoData, match="positive and negative"):
        balanced_batches(np.zeros(10), 4, seed=0)
