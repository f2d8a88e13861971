"""SKU: does the photo show the SKU the seller claims? Metric learning with a gallery.

Network: frozen ImageNet trunk -> trainable tail -> linear embedding -> BNNeck (BatchNorm) ->
bias-free classifier. Loss: cross-entropy with label smoothing on the classifier (after the BN)
plus batch-hard triplet loss on the embedding (before the BN), over P x K batches (P SKUs, K
photos each). Retrieval uses the L2-normalised post-BN embedding and cosine similarity.

Gallery: ``gallery_per_sku`` clean training photos per known SKU. The predicted SKU is a
similarity-weighted vote of the top-``knn`` gallery photos; the top-1 similarity measures how
sure the match is. Open set: ``holdout_skus`` catalogue SKUs (chosen from the seed) are never
trained on and have no gallery photo; they stand for new SKUs. The mismatch alarm fires when the
predicted SKU is not the claimed one or the top-1 similarity is below a threshold, chosen on
validation so the alarm reaches ``recall_targets.sku_mismatch`` over wrong claims and
``recall_targets.unknown_sku`` over unknown SKUs, each on its own positives (``mismatch_threshold``).
One threshold over both kinds together let the easy kind (a wrong claim almost always predicts
another SKU, score 2) fill the target, and unknown-SKU recall sat under its floor in 2 of 3 runs.

An unknown SKU claimed under its own (new) name is caught trivially: no gallery photo carries that
name. The hard case is a new product listed under the name of the known SKU it most resembles, and
that is how unknown-SKU photos are scored here (claimed = the nearest known SKU), so only the
similarity threshold can catch them: the unknown-SKU alarm recall measures the open-set threshold.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from pipelines.data.dataset import split_frame
from pipelines.serve.decision import knn_vote, rank, sku_alarm
from pipelines.train.evaluate import UNCALIBRATED, binary_metrics, threshold_for_recall, write_metrics, write_plot
from pipelines.train.harness import fit
from pipelines.params import Params
from pipelines.serve.bundle import GALLERY_FILE
from pipelines.train.evaluate import metric
from pipelines.train.graphs import Bundle, Graph
from pipelines.train.trunk import Trunk
from pipelines.train.families import common

FAMILY = "sku"


class SkuNet(nn.Module):
    def __init__(self, trunk: Trunk, embedding_dim: int, num_classes: int):
        super().__init__()
        self.trunk, self.tail = trunk, trunk.new_tail()
        self.embed = nn.Linear(self.tail.num_features, embedding_dim)
        self.neck = nn.BatchNorm1d(embedding_dim)
        self.neck.bias.requires_grad_(False)  # BNNeck: no shift before the classifier
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False)

    def train_outputs(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(self.tail(f))
        return e, self.classifier(self.neck(e))

    def embed_features(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.neck(self.embed(self.tail(f))), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised embedding of a photo batch (what serving compares with the gallery)."""
        return self.embed_features(self.trunk(x))


def batch_hard_triplet(e: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """For each anchor: its farthest positive and nearest negative in the batch (Hermans et al. 2017)."""
    d = torch.cdist(e, e)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (d * same).max(1).values
    hardest_neg = d.masked_fill(same, float("inf")).min(1).values
    valid = torch.isfinite(hardest_neg)
    if not valid.any():
        return e.sum() * 0.0
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def holdout_skus(skus, params: Params) -> list[str]:
    """The catalogue SKUs kept out of training (open set), chosen from the seed, stable as data grows."""
    ranked = sorted(set(skus) - {"none"}, key=lambda s: hashlib.sha256(f"{params.seed}:{s}".encode()).hexdigest())
    return sorted(ranked[:params.train.sku.holdout_skus])


def products(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["sku_id"] != "none"].reset_index(drop=True)


def _clean_first(df: pd.DataFrame, blur_cutoff: float) -> pd.DataFrame:
    defects = (df["blur_score"] >= blur_cutoff) | df["manipulated"] | df["off_centre"] | df["dirt"] | \
        df["prohibited"].map(len).gt(0)
    key = df["listing_id"].map(lambda s: hashlib.sha256(s.encode()).hexdigest())
    return df.assign(_defects=defects.to_numpy(), _key=key).sort_values(["_defects", "_key"])


def pick_gallery(train: pd.DataFrame, known: list[str], per_sku: int, blur_cutoff: float) -> pd.DataFrame:
    """``per_sku`` training photos per known SKU, defect-free ones first, in a stable order."""
    ranked = _clean_first(train[train["sku_id"].isin(known)], blur_cutoff)
    return ranked.groupby("sku_id", sort=True).head(per_sku).drop(columns=["_defects", "_key"]).reset_index(drop=True)


def pk_batches(labels: np.ndarray, p: int, k: int, seed: int):
    """``batch_sampler(epoch)`` for the harness: P SKUs x K photos, every photo about once per epoch."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}

    def sampler(epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        pools = {c: list(rng.permutation(ix)) for c, ix in by_class.items()}
        batches = []
        for _ in range(max(1, len(labels) // (p * k))):
            classes = rng.choice(list(by_class), size=min(p, len(by_class)), replace=False)
            batch = []
            for c in classes:
                while len(pools[c]) < k:
                    pools[c] += list(rng.permutation(by_class[c]))
                batch += [int(pools[c].pop()) for _ in range(k)]
            batches.append(batch)
        return batches
    return sampler


def knn_predict(query: torch.Tensor, gallery: torch.Tensor, gallery_skus: np.ndarray, k: int):
    """Predicted SKU, top-1 similarity and the ranked gallery indices, by the service's own vote."""
    sims = (query @ gallery.T).numpy()
    order = rank(sims)
    votes = [knn_vote(row, o, gallery_skus, k) for row, o in zip(sims, order)]
    predicted = np.array([v[0] for v in votes])
    top1 = np.array([v[1] for v in votes], dtype=np.float64)
    return predicted, top1, order


def train(root: Path, params: Params) -> dict:
    started = time.perf_counter()
    settings = params.train.family(FAMILY)
    df = common.load_frame(root)
    held = holdout_skus(df["sku_id"], params)
    train_df = products(split_frame(df, "train"))
    train_df = train_df[~train_df["sku_id"].isin(held)].reset_index(drop=True)
    val_df = products(split_frame(df, "val"))
    val_known = val_df[val_df["sku_id"].isin(set(train_df["sku_id"]))].reset_index(drop=True)
    if train_df.empty or val_known.empty:
        raise common.NoData("sku: no product photos of known SKUs in train or validation")
    classes = sorted(train_df["sku_id"].unique())
    arch = {"trunk_split": settings.trunk_split, "pretrained": params.train.pretrained,
            "image_size": params.train.input_size(FAMILY), "embedding_dim": settings.embedding_dim,
            "classes": classes, "holdout_skus": held}
    net = SkuNet(Trunk(settings.trunk_split, pretrained=params.train.pretrained), settings.embedding_dim,
                 len(classes)).to(memory_format=torch.channels_last)
    x_train = common.features(root, params, net.trunk, train_df, size=arch["image_size"])
    x_val = common.features(root, params, net.trunk, val_known, size=arch["image_size"])
    y_train = torch.as_tensor(train_df["sku_id"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    gallery_df = pick_gallery(train_df, classes, settings.gallery_per_sku, settings.gallery_blur_cutoff)
    x_gallery = common.features(root, params, net.trunk, gallery_df, size=arch["image_size"])
    ce = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)

    def loss_fn(model, batch):
        x, y = batch
        e, logits = model.train_outputs(x.contiguous(memory_format=torch.channels_last))
        return ce(logits, y) + batch_hard_triplet(e, y, settings.triplet_margin)

    def score_fn(model, _loader):
        pred, _, _ = knn_predict(common.predict(model.embed_features, x_val),
                                 common.predict(model.embed_features, x_gallery),
                                 gallery_df["sku_id"].to_numpy(), settings.knn)
        return float((pred == val_known["sku_id"].to_numpy()).mean())

    cfg = common.fit_config(settings, params, salt=1)
    trainable = [p for n, p in net.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    run = common.run_dir(root, FAMILY, arch, cfg.__dict__, settings.model_dump(), list(train_df["sha256"]),
                         list(val_known["sha256"]))
    result = fit(net, common.Tensors(x_train, y_train), [], loss_fn, score_fn, cfg, run,
                 params=trainable, batch_sampler=pk_batches(y_train.numpy(), settings.p, settings.k, cfg.seed),
                 name=FAMILY)
    net.eval()
    gallery = {"embeddings": common.predict(net.embed_features, x_gallery),
               "sku_id": gallery_df["sku_id"].tolist(), "listing_id": gallery_df["listing_id"].tolist()}
    common.save(FAMILY, root, "model", net, arch)
    torch.save(gallery, common.model_dir(FAMILY, root) / "gallery.pt")
    common.finish_run(run)
    return common.write_train_record(FAMILY, root, started, df, epochs_run=result.epochs_run,
                                     best_epoch=result.best_epoch, best_val_top1=result.best_score,
                                     fit_seconds=round(result.seconds, 1), history=result.history,
                                     train_photos=len(train_df), classes=len(classes), holdout_skus=held,
                                     gallery_photos=len(gallery_df))


def load_model(root: Path) -> tuple[SkuNet, dict, dict]:
    blob = common.load(FAMILY, root, "model")
    arch = blob["arch"]
    net = SkuNet(Trunk(arch["trunk_split"], pretrained=arch["pretrained"]), arch["embedding_dim"], len(arch["classes"]))
    net.load_state_dict(blob["state_dict"])
    gallery = torch.load(common.model_dir(FAMILY, root) / "gallery.pt", map_location="cpu", weights_only=False)
    return net.eval(), arch, gallery


def alarm_score(predicted: np.ndarray, claimed: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """Higher = more suspicious: 2 when the predicted SKU is not the claimed one, else minus the top-1 similarity.

    ``score >= -threshold`` is exactly the service's alarm at similarity threshold ``threshold``
    (:func:`pipelines.serve.decision.sku_alarm`); the score only serves calibration and curves.
    """
    return np.where(predicted != claimed, 2.0, -top1)


def alarms(predicted: np.ndarray, top1: np.ndarray, claimed: np.ndarray, threshold: float | None) -> np.ndarray:
    """The service's SKU alarm for every photo (claims of catalogue SKUs)."""
    return np.array([sku_alarm(p, s, c, threshold) is not None for p, s, c in zip(predicted, top1, claimed)],
                    dtype=bool)


def _mean_ap(order: np.ndarray, gallery_skus: np.ndarray, truth: np.ndarray) -> float:
    aps = []
    for i, t in enumerate(truth):
        rel = gallery_skus[order[i]] == t
        if rel.any():
            hits = np.cumsum(rel)
            aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).mean()))
    return float(np.mean(aps)) if aps else float("nan")


def _histogram(top1: np.ndarray, positive: np.ndarray) -> pd.DataFrame:
    edges = np.linspace(-0.2, 1.0, 49)
    return pd.DataFrame({"similarity": (edges[:-1] + edges[1:]) / 2,
                         "genuine_claims": np.histogram(top1[~positive], edges)[0],
                         "wrong_or_unknown": np.histogram(top1[positive], edges)[0]})


def _share(flag: np.ndarray, mask: np.ndarray) -> float:
    """Share of ``mask`` rows that ``flag`` marks; NaN when the mask selects nothing."""
    return float(flag[mask].mean()) if mask.any() else float("nan")


def mismatch_threshold(score: np.ndarray, wrong_claim: np.ndarray, unknown: np.ndarray,
                       targets: dict[str, float]) -> tuple[float | None, str]:
    """The similarity threshold on validation: each kind of positive reaches its own recall target.

    ``targets`` maps "sku_mismatch" (wrong claims) and "unknown_sku" to a recall; ``score`` is
    :func:`alarm_score`. Per kind, the alarm-score threshold ``t`` (``score >= t`` alarms) is found;
    the lowest wins, so every kind with a positive on validation reaches its target, and the
    similarity threshold is ``-t`` (a similarity at or below it alarms; -1 when prediction
    mismatches alone reach the target). A kind with no positive there is left out and named in the
    returned source; with no positive at all the threshold is None (uncalibrated: every claim alarms).
    """
    kinds = {"sku_mismatch": np.asarray(wrong_claim, bool), "unknown_sku": np.asarray(unknown, bool)}
    found = {k: threshold_for_recall(score, m, targets[k]) for k, m in kinds.items() if m.any()}
    if not found:
        return None, UNCALIBRATED
    missing = sorted(set(kinds) - set(found))
    t = min(found.values())
    return (-t if t < 2.0 else -1.0), "validation" + (f" (no {', '.join(missing)} positive there)" if missing else "")


def _scored(root: Path, params: Params, df: pd.DataFrame, net: SkuNet, arch: dict, gallery: dict, split: str):
    """Alarm scores of one split; unknown-SKU photos are claimed as their nearest known SKU (the hard case)."""
    d = products(split_frame(df, split))
    x = common.features(root, params, net.trunk, d, size=arch["image_size"])
    g_sku = np.array(gallery["sku_id"])
    pred, top1, order = knn_predict(common.predict(net.embed_features, x), gallery["embeddings"], g_sku,
                                    params.train.sku.knn)
    truth, claimed = d["sku_id"].to_numpy(), d["claimed_sku"].to_numpy().copy()
    unknown = ~np.isin(truth, list(arch["classes"]))
    claimed[unknown] = pred[unknown]
    wrong_claim = (claimed != truth) & ~unknown
    return d, pred, top1, order, truth, unknown, wrong_claim, claimed, alarm_score(pred, claimed, top1)


def evaluate(root: Path, params: Params) -> dict:
    df = common.load_frame(root)
    net, arch, gallery = load_model(root)
    g_sku = np.array(gallery["sku_id"])
    targets = {"sku_mismatch": params.recall_targets.sku_mismatch, "unknown_sku": params.recall_targets.unknown_sku}
    _, pred_v, top1_v, _, _, unknown_v, wrong_v, claimed_v, score_v = _scored(root, params, df, net, arch, gallery,
                                                                              "val")
    sim_threshold, source = mismatch_threshold(score_v, wrong_v, unknown_v, targets)

    d, pred, top1, order, truth, unknown, wrong_claim, claimed, score = _scored(root, params, df, net, arch, gallery,
                                                                                "test")
    positive = wrong_claim | unknown
    alarm, alarm_v = alarms(pred, top1, claimed, sim_threshold), alarms(pred_v, top1_v, claimed_v, sim_threshold)
    kn = ~unknown
    top5 = np.array([truth[i] in set(g_sku[order[i, :5]]) for i in range(len(truth))], dtype=bool)
    metrics = {
        "test": {
            "top1_accuracy": _share(pred == truth, kn),
            "recall_at_5": _share(top5, kn),
            "mAP": _mean_ap(order[kn], g_sku, truth[kn]),
            "mismatch_alarm": binary_metrics(score, positive, None if sim_threshold is None else -sim_threshold),
            "unknown_sku_alarm_recall": _share(alarm, unknown),
            "wrong_claim_alarm_recall": _share(alarm, wrong_claim),
            "false_alarm_rate_genuine": _share(alarm, ~positive),
            "auto_pass_share": float((~alarm).mean()),
            "photos": int(len(d)), "unknown_sku_photos": int(unknown.sum()), "wrong_claim_photos": int(wrong_claim.sum()),
        },
        "thresholds": {"similarity": sim_threshold},
        "threshold_source": {"similarity": source},
        "recall_target": targets,
        "validation": {"unknown_sku_photos": int(unknown_v.sum()), "wrong_claim_photos": int(wrong_v.sum()),
                       "unknown_sku_alarm_recall": _share(alarm_v, unknown_v),
                       "wrong_claim_alarm_recall": _share(alarm_v, wrong_v)},
        "holdout_skus": sorted(arch["holdout_skus"]),
        "train_seconds": common.read_train_record(FAMILY, root)["seconds"],
    }
    write_metrics(FAMILY, metrics, root)
    write_plot(FAMILY, "similarity_histogram", _histogram(top1, positive), root)
    return metrics


# --- what the rest asks of the family (pipelines.train.families.Family) ------------------------------

def bundle(root: Path, params: Params) -> Bundle:
    """The embedding graph, the gallery (embeddings and SKU ids) and each SKU's category."""
    net, arch, gallery = load_model(root)
    df = common.load_frame(root)
    categories = df.drop_duplicates("sku_id").set_index("sku_id")["category"].to_dict()
    embeddings = gallery["embeddings"].float().numpy()
    return Bundle([Graph("sku", net, arch["image_size"], "embedding")],
                  meta={"gallery_skus": list(gallery["sku_id"]), "knn": params.train.sku.knn,
                        "sku_categories": {k: v for k, v in categories.items() if isinstance(k, str) and k}},
                  files={GALLERY_FILE: lambda path: np.save(path, embeddings)})


REVIEWER_DEFECTS = ("wrong_claim", "outside_catalogue")          # what the whole reviewer measures it on (pipelines/release/reviewer.py)


def gate_values(test: dict) -> tuple[dict[str, float], float]:
    return ({"sku_mismatch": metric(test, "mismatch_alarm.recall"), "unknown_sku": metric(test, "unknown_sku_alarm_recall")},
            metric(test, "auto_pass_share"))


def summary(t: dict) -> str:
    return (f"top-1 {_f(t['top1_accuracy'])}, mAP {_f(t['mAP'])}, recall@5 {_f(t['recall_at_5'])}, "
            f"mismatch-alarm recall {_f(t['mismatch_alarm']['recall'])}, unknown-SKU alarm recall "
            f"{_f(t['unknown_sku_alarm_recall'])}, auto-pass {_f(t['auto_pass_share'])}")


def _f(value) -> str:
    return "n/a" if value is None else format(value, ".3f")
