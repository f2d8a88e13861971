"""The operating-point report of the whole reviewer: what each threshold buys and costs, on the scores it decided.

For every swept check (blur, sticker_missing, dirt, manipulation, each prohibited category, the SKU alarm) the
check's threshold is swept over the observed scores while every other check keeps the flags it gave
(the row's ``reasons`` minus this check's): a photo is auto-passed iff no other reason flags it and this
check does not flag it at ``t``. Plotted per split: clean auto-pass (share of clean photos auto-passed)
against photo recall of the check's defect (share of its positives sent to a person for any reason),
the current threshold (the bundles' ``meta.json``) marked and the gate floor drawn. Before anything is
drawn, the vectorised flags at the current threshold must equal the reasons that
:func:`pipelines.serve.decision.decide` recorded, or :class:`ValueError` is raised: the curves are
anchored on the one decision rule. Centring (a tolerance, not a score threshold) is held, not swept.

The page is self-contained (matplotlib PNGs and JPEG thumbnails as data URIs), e.g.
``reports/reviewer/operating_point.html``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.serve.images import thumbnail
from pipelines.train.review import given

SKU_REASONS = ("sku_mismatch", "unknown_sku")
# a defect whose recall floor (params.yaml gate.recall_floors) is named after its check; every other defect or check
# is its own key, a prohibited category ("prohibited:cash") held to "prohibited"
FLOOR_OF = {"off_centre": "centring", "wrong_claim": "sku_mismatch", "outside_catalogue": "unknown_sku"}
CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{margin-bottom:4px} .sub{color:#666;margin-bottom:16px;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 20px} th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7} td:first-child,th:first-child{text-align:left} td.below{background:#fde0dc;color:#b71c1c;font-weight:bold}
section.check>.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
section.check{border-top:2px solid #dde3ea;padding-top:8px;margin-top:18px}
.grid{display:flex;flex-wrap:wrap;gap:12px} .card{width:170px;border:1px solid #ddd;padding:6px;font-size:12px}
.card img{display:block;margin:0 auto 4px;max-width:160px} .missed{border-color:#6a1b9a} .alarm{border-color:#ef6c00}
.missing{height:100px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
"""


@dataclass
class Check:
    name: str                    # blur, sticker_missing, dirt, manipulation, prohibited:<cat>, sku
    score: str                   # the scores column
    reasons: tuple[str, ...]     # the reasons this check gives
    defects: tuple[str, ...]     # truth columns (without "truth.") it is meant to catch
    threshold: float | None      # current, from the bundle meta; None: uncalibrated, flags every photo
    floors: dict[str, float]     # gate floor(s) of its recall
    sku: bool = False            # the SKU alarm: similarity <= t alarms (other checks: score >= t flags)

    def rule(self) -> str:
        return ("similarity of the claimed SKU &le; t, or another SKU ahead by the margin, alarms" if self.sku
                else "score &ge; t flags")


def floor_of(floors: dict, name: str) -> float | None:
    """The recall floor in ``floors`` (``gate.recall_floors``) that a defect or a check ``name`` is held to; None:
    none. The one map the gate, the reviewer stage, the INT8 check and the operating-point report share."""
    name = name.split(":")[0]
    return floors.get(FLOOR_OF.get(name, name))


def defects_in(part: pd.DataFrame, *, overall: bool = True) -> list[str]:
    """The defects with at least one photo (``truth.<defect>``) among the rows ``part`` of a scores frame.
    ``overall``: ``prohibited`` (any category) as well as each category."""
    skip = {"truth.clean"} | (set() if overall else {"truth.prohibited"})
    return [c.removeprefix("truth.") for c in part if c.startswith("truth.") and c not in skip and part[c].any()]


def photo_recall(part: pd.DataFrame, manual: np.ndarray, *, overall: bool = True) -> dict[str, float]:
    """Each defect's photo recall on ``part`` (:func:`defects_in`): the share of its photos that ``manual`` sends
    to a person."""
    return {d: float(manual[part[f"truth.{d}"].to_numpy(bool)].mean()) for d in defects_in(part, overall=overall)}


def below_floor(recall: dict[str, float], floors: dict) -> list[str]:
    """The defects of ``recall`` (:func:`photo_recall`) under their recall floor."""
    return sorted(d for d, r in recall.items() if (f := floor_of(floors, d)) is not None and r < f - 1e-12)


def checks(scores: pd.DataFrame, metas: dict[str, dict], floors: dict) -> list[Check]:
    """The swept checks whose family has a bundle meta and whose scores are in the frame."""
    out, fl = [], lambda *ks: {k: floors[k] for k in ks if k in floors}
    plain = [("blur", "blur", "blur", "blur_score"), ("detector", "sticker_missing", "sticker_missing", "sticker_missing_score"),
             ("detector", "dirt", "dirt", "dirt_score"), ("manipulation", "manipulation", "manipulation", "manipulation_score")]
    for family, name, key, col in plain[:3]:
        if family in metas and col in scores:
            out.append(Check(name, col, (name,), (name,), metas[family]["thresholds"].get(key), fl(name)))
    for cat, thr in (metas.get("prohibited", {}).get("thresholds") or {}).items():
        if f"prohibited_score.{cat}" in scores:
            out.append(Check(f"prohibited:{cat}", f"prohibited_score.{cat}", (f"prohibited:{cat}",),
                             (f"prohibited:{cat}",), thr, fl("prohibited")))
    family, name, key, col = plain[3]
    if family in metas and col in scores:
        out.append(Check(name, col, (name,), (name,), metas[family]["thresholds"].get(key), fl(name)))
    if "sku" in metas and "sku_match_similarity" in scores:
        out.append(Check("sku", "sku_match_similarity", SKU_REASONS, ("wrong_claim", "outside_catalogue"),
                         metas["sku"]["thresholds"].get("similarity"), fl(*SKU_REASONS), sku=True))
    return out


def _eligible(check: Check, frame: pd.DataFrame, metas: dict) -> np.ndarray:
    """Photos the check can flag at all: stickers only where the category requires them (decide's category rule)."""
    if check.name != "sticker_missing":
        return np.ones(len(frame), dtype=bool)
    sku_cats = metas.get("sku", {}).get("sku_categories", {})
    has_sku = "sku" in metas and "sku_predicted" in frame

    def category(row) -> str | None:
        cat = given(row["category"]) if "category" in frame else None
        if cat is None and has_sku:
            cat = sku_cats.get(given(row.get("claimed_sku")) or row["sku_predicted"])
        return cat
    required = set(metas["detector"]["sticker_required_categories"])
    return np.array([category(r) in required for _, r in frame.iterrows()], dtype=bool)


def flags(check: Check, frame: pd.DataFrame, metas: dict, thresholds) -> np.ndarray:
    """``[len(thresholds), len(frame)]`` booleans: does the check flag each photo at each threshold (None: uncalibrated)."""
    t = np.array([(math.inf if check.sku else -math.inf) if v is None else v for v in thresholds], dtype=float)[:, None]
    s = frame[check.score].to_numpy(dtype=float)[None, :]
    if not check.sku:
        return _eligible(check, frame, metas)[None, :] & (s >= t)
    # the similarity swept; the margin held at its threshold (decision.sku_alarm). A claimed SKU beyond the
    # candidates has no similarity: it alarms at every threshold, as decide() does.
    known = set(metas["sku"].get("gallery_skus", []))
    margin_thr = metas["sku"]["thresholds"].get("margin")
    claimed = [given(c) for c in frame["claimed_sku"]]
    margin = frame["sku_margin"].to_numpy(dtype=float)
    fixed = np.array([c is not None and (c not in known or margin_thr is None or not m > margin_thr)
                      for c, m in zip(claimed, margin)])
    return fixed[None, :] | (np.nan_to_num(s, nan=-np.inf) <= t)


def recorded(check: Check, frame: pd.DataFrame) -> np.ndarray:
    return frame["reasons"].map(lambda r: any(x in check.reasons for x in r)).to_numpy(dtype=bool)


def verify(check: Check, frame: pd.DataFrame, metas: dict) -> None:
    """Raise unless the vectorised flags at the current threshold are exactly the reasons decide() recorded."""
    diff = flags(check, frame, metas, [check.threshold])[0] != recorded(check, frame)
    if diff.any():
        ids = ", ".join(map(str, frame.loc[diff, "listing_id"].head(5)))
        raise ValueError(f"operating point of {check.name}: flags at threshold {check.threshold} differ from the "
                         f"recorded reasons on {int(diff.sum())} photo(s) ({ids}): the curve would not be decide()'s")


def positives(check: Check, frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"truth.{d}" for d in check.defects]].any(axis=1).to_numpy(dtype=bool)


def grid(check: Check, frame: pd.DataFrame, metas: dict, max_points: int = 200) -> list:
    """Thresholds to sweep: the observed scores of the photos it can flag (at most ``max_points``, by quantile),
    the current threshold and the end where it flags none (scores) or only predicted-other-SKU alarms (SKU)."""
    seen = np.unique(frame.loc[_eligible(check, frame, metas), check.score].dropna().to_numpy(dtype=float))
    if len(seen) > max_points:
        seen = np.unique(np.quantile(seen, np.linspace(0, 1, max_points)))
    end = -math.inf if check.sku else math.inf
    swept = sorted({*seen.tolist(), end} | ({check.threshold} if check.threshold is not None else set()))
    if check.threshold is None:                 # uncalibrated: flags all, the far end of the sweep
        swept = swept + [None] if check.sku else [None] + swept
    return swept


def curve(check: Check, frame: pd.DataFrame, metas: dict, thresholds) -> pd.DataFrame:
    """Clean auto-pass and photo recall of the check's defect at each threshold, every other reason held."""
    other = frame["reasons"].map(lambda r: any(x not in check.reasons for x in r)).to_numpy(dtype=bool)
    manual = other[None, :] | flags(check, frame, metas, thresholds)
    clean, pos = frame["truth.clean"].to_numpy(dtype=bool), positives(check, frame)
    share = lambda m: m.mean(axis=1) if m.shape[1] else np.full(len(m), np.nan)
    return pd.DataFrame({"threshold": list(thresholds), "clean_auto_pass": share(~manual[:, clean]),
                         "photo_recall": share(manual[:, pos])})


def held(frame: pd.DataFrame, found: list[Check]) -> np.ndarray:
    """Rows sent to a person, as recorded, for a reason none of the ``found`` checks gives (centring, no product)."""
    swept = {r for c in found for r in c.reasons}
    return frame["reasons"].map(lambda r: any(x not in swept for x in r)).to_numpy(dtype=bool)


def redecide(frame: pd.DataFrame, metas: dict, floors: dict, thresholds: dict[str, float | None]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows decide() would send to a person with ``thresholds`` ({check name: threshold}) in place of the
    bundles' (checks not named keep theirs; reasons no swept check gives stay as recorded), and each check's flags."""
    found = checks(frame, metas, floors)
    own = {c.name: flags(c, frame, metas, [thresholds.get(c.name, c.threshold)])[0] for c in found}
    manual = held(frame, found)
    for f in own.values():
        manual = manual | f
    return manual, own


def nearest(check: Check, frame: pd.DataFrame, metas: dict, n: int = 6) -> pd.DataFrame:
    """Up to ``n`` photos nearest the current threshold: positives this check passes (missed) and clean
    photos it flags (false alarms), half each where both have enough; column ``kind`` says which."""
    mine = flags(check, frame, metas, [check.threshold])[0]
    s = frame[check.score].astype(float)
    t = check.threshold if check.threshold is not None else (s.max() if check.sku else s.min())
    dist = (s - t).abs()
    missed = frame.assign(kind="missed", dist=dist)[positives(check, frame) & ~mine].sort_values("dist")
    alarms = frame.assign(kind="false alarm", dist=dist)[frame["truth.clean"].to_numpy(bool) & mine].sort_values("dist")
    k = max(n // 2, n - len(alarms))
    return pd.concat([missed.head(k), alarms.head(n - min(k, len(missed)))])


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else html.escape(str(v))


def _few(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f" +{len(items) - k} more" if len(items) > k else "") if items else "none"


def _plot(check: Check, curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
          proposed: dict[str, pd.DataFrame] | None = None, proposed_label: str = "") -> str:
    """The check's curves per split with its current point (a star) and, per split in ``proposed``, a proposed
    point (a diamond: ``reviewops policy set``'s effect report)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    ax = fig.add_subplot()
    styles = {"test": ("-", "#1565c0"), "val": ("--", "#78909c"), "live_mix": (":", "#2e7d32")}
    for split, (c, now) in curves.items():
        line, colour = styles.get(split, ("-.", "#6d4c41"))
        ax.plot(c["photo_recall"], c["clean_auto_pass"], line, marker=".", color=colour,
                label=f"{split} (sweep)")
        ax.plot(now["photo_recall"], now["clean_auto_pass"], "*", ms=16, color=colour, mec="black",
                label=f"{split} current t={_fmt(check.threshold, 4).replace('&ndash;', 'none (flags all)')}")
        if proposed is not None and split in proposed:
            p = proposed[split]
            ax.plot(p["photo_recall"], p["clean_auto_pass"], "D", ms=10, color=colour, mec="black",
                    label=f"{split} proposed {proposed_label}")
    for (key, value), ls in zip(check.floors.items(), ("-", ":")):
        ax.axvline(value, color="#c62828", ls=ls, lw=1.5, label=f"floor {key} {value:.2f}")
    seen = [v for c, now in curves.values() for v in c["photo_recall"]] + list(check.floors.values())
    low = max(0.0, math.floor((min(seen) - 0.05) * 10) / 10)       # zoom on the recall range in play
    ax.set(xlim=(low - 0.02 * (1 - low), 1 + 0.04 * (1 - low)), ylim=(-0.02, 1.04), xlabel=f"photo recall of {' | '.join(check.defects)}",
           ylabel="clean auto-pass", title=f"{check.name}: {html.unescape(check.rule())}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _summary(scores: pd.DataFrame, floors: dict, splits: list[str]) -> str:
    from pipelines.release.reviewer import defects_of, split_metrics     # lazily: reviewer imports this module

    defects = defects_of(scores)
    m = {s: split_metrics(scores[scores["split"] == s], defects) for s in splits}
    cell = lambda v, f: f"<td class='below'>{_fmt(v)}</td>" if v is not None and f is not None and v < f else f"<td>{_fmt(v)}</td>"
    head = "".join(f"<th>{s} photo recall</th><th>{s} reason recall</th><th>{s} positives</th>" for s in splits)
    rows = ["<tr><td>clean auto-pass</td><td>&ndash;</td>" + "".join(
        f"<td>{_fmt(m[s]['clean_auto_pass'])}</td><td>&ndash;</td><td>{m[s]['clean']} clean</td>" for s in splits) + "</tr>"]
    for d in defects:
        f = floor_of(floors, d)
        rows.append(f"<tr><td>{html.escape(d)}</td><td>{_fmt(f, 2)}</td>" + "".join(
            cell(m[s]["photo_recall"][d], f) + cell(m[s]["reason_recall"][d], f) + f"<td>{m[s]['positives'][d]}</td>"
            for s in splits) + "</tr>")
    return f"<table id='summary'><tr><th>figure</th><th>floor</th>{head}</tr>{''.join(rows)}</table>"


def _section(check: Check, frame: pd.DataFrame, metas: dict, root: Path, splits: list[str], n_thumbs: int,
             thumb_px: int, max_points: int) -> str:
    curves, rows = {}, []
    for split in splits:
        part = frame[frame["split"] == split]
        now = curve(check, part, metas, [check.threshold])
        rows.append(f"<tr><td>{split}</td><td>{_fmt(now['clean_auto_pass'][0])}</td><td>{_fmt(now['photo_recall'][0])}</td>"
                    f"<td>{int(positives(check, part).sum())}</td><td>{int(part['truth.clean'].sum())}</td></tr>")
        if positives(check, part).any() and part["truth.clean"].any():
            curves[split] = (curve(check, part, metas, grid(check, part, metas, max_points)), now)
    plot = (f"<img class='plot' src='{_plot(check, curves)}' alt='{html.escape(check.name)} operating curve'>" if curves
            else "<p class='note'>No split has both positives and clean photos: no curve.</p>")
    cards = []
    thumbs_split = "test" if "test" in splits else splits[0]
    for _, r in nearest(check, frame[frame["split"] == thumbs_split], metas, n_thumbs).iterrows():
        p = Path(r["path"]) if Path(r["path"]).is_absolute() else root / r["path"]
        uri = thumbnail(p, thumb_px)
        img = f"<img src='{uri}' alt='{html.escape(str(r['listing_id']))}'>" if uri else "<div class='missing'>no photo</div>"
        truth = [c.removeprefix("truth.") for c in frame if c.startswith("truth.") and c != "truth.prohibited" and r[c]]
        cards.append(f"<div class='card {'missed' if r['kind'] == 'missed' else 'alarm'}'>{img}<b>{r['kind']}</b> "
                     f"score {_fmt(float(r[check.score]), 4)}<br>listing {html.escape(str(r['listing_id']))}<br>"
                     f"truth: {html.escape(', '.join(truth) or 'none')}<br>reasons: {html.escape(_few(list(r['reasons'])))}</div>")
    grid_html = "".join(cards) or f"<p>No missed positive or false alarm on {thumbs_split}.</p>"
    return (f"<section class='check' id='check-{html.escape(check.name.replace(':', '-'))}'>"
            f"<h2>{html.escape(check.name)}</h2><div class='sub'>Threshold {_fmt(check.threshold, 4)} ({check.rule()}); "
            f"floor {', '.join(f'{k} {v:.2f}' for k, v in check.floors.items()) or '&ndash;'}.</div><div class='row'>{plot}"
            f"<table><tr><th>current threshold</th><th>clean auto-pass</th><th>photo recall</th><th>positives</th>"
            f"<th>clean</th></tr>{''.join(rows)}</table></div><h3>Nearest the threshold on {thumbs_split}</h3><div class='grid'>{grid_html}</div></section>")


def write_report(root: Path, scores: pd.DataFrame, metas: dict[str, dict], floors: dict, out: Path, *,
                 thumbnails: int = 6, thumbnail_px: int = 160, max_points: int = 200) -> Path:
    """Write the operating-point page to ``out`` and return it.

    ``scores``: ``models/reviewer/scores.parquet``; ``metas``: ``{family: meta.json}`` of the bundles that
    decided; ``floors``: the gate's recall floors. ``thumbnails``: photos shown per check (nearest the
    threshold); ``thumbnail_px``: their longest side; ``max_points``: most thresholds swept per curve.
    Raises ValueError when a check's flags at its current threshold disagree with the recorded reasons.
    """
    root, out = Path(root), Path(out)
    splits = [s for s in ("test", "val", "live_mix") if (scores["split"] == s).any()]
    found = checks(scores, metas, floors)
    for check in found:
        verify(check, scores, metas)
    sections = "".join(_section(c, scores, metas, root, splits, thumbnails, thumbnail_px, max_points) for c in found)
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>ReviewOps reviewer operating points</title><style>{CSS}</style></head><body>
<h1>Reviewer operating points</h1>
<div class="sub">Every photo of {' and '.join(splits)} reviewed by the candidate bundles through the one decision rule
({len(scores)} photos). Per check, its threshold is swept while every other check keeps its flags: clean auto-pass
(clean photos passed) against photo recall (positives sent to a person for any reason). The star is the current
threshold; red lines are the gate floors; cells below their floor are red. Centring is held, not swept.</div>
<h2>Summary</h2>{_summary(scores, floors, splits)}{sections}</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
