"""The false-positive report per check (`reviewops fp-report`, DAG `fp_report`).

Manual-review outcomes and after-sales misses (``monitoring.feedback``) are joined with the
prediction log on ``listing_id`` (a listing's latest answer in the period; smoke requests left
out). Per check (each reason the reviewer gives):

* flagged: answers in the period with that reason;
* reviewed / confirmed / false positives: flagged answers the reviewer judged, the defect there or not;
* false-positive rate: false positives / reviewed (the share of flags a person passed);
* misses: after-sales reports of that defect on a listing the check did not flag;
* the false-positive rate by day (the day of the answer) and a table of it.

The top false positives (flagged with the highest score, passed by the reviewer) are shown with
thumbnails of the archived photos (``image_path`` of the log, ``serving.photo_archive``). The
report is one self-contained HTML page (plotly charts, tables, inline thumbnails) and a JSON file
under ``<reports_dir>/<date>/fp-report-<time>.html|json``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.params import Params, load_params
from pipelines.serve.images import thumbnail

from .feedback import CHECKS, FeedbackStore, store_url

SKU_CHECKS = ("sku_mismatch", "unknown_sku")   # one defect (not the SKU claimed), two reasons
SCORE_OF = {"blur": "blur_score", "sticker_missing": "sticker_missing_score", "dirt": "dirt_score",
            "manipulation": "manipulation_score", "off_centre": "centring_offset"}
THRESHOLD_OF = {"blur": ("blur", "threshold"), "sticker_missing": ("sticker", "threshold"),
                "dirt": ("dirt", "threshold"), "manipulation": ("manipulation", "threshold"),
                "off_centre": ("centering", None), "sku_mismatch": ("sku", "threshold"), "unknown_sku": ("sku", "threshold")}


@dataclass
class CheckRow:
    check: str
    flagged: int
    reviewed: int
    confirmed: int
    false_positives: int
    false_positive_rate: float | None      # false positives / reviewed
    misses: int
    unreviewed: int


@dataclass
class FpReport:
    since: str
    until: str
    predictions: int                       # latest answer per listing in the period (and unlisted answers)
    feedback_rows: int
    reviewed_listings: int
    checks: list[CheckRow] = field(default_factory=list)
    trend: list[dict] = field(default_factory=list)            # {"day", "check", "reviewed", "false_positives", "rate"}
    top_false_positives: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    html: str | None = None
    json: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"false positives {self.since} .. {self.until}: {self.predictions} answers, "
                 f"{self.reviewed_listings} reviewed listings, {self.feedback_rows} feedback rows",
                 f"  {'check':22s} {'flagged':>7s} {'reviewed':>8s} {'confirmed':>9s} {'false pos':>9s} "
                 f"{'FP rate':>7s} {'misses':>6s}"]
        for c in self.checks:
            rate = "-" if c.false_positive_rate is None else f"{c.false_positive_rate:.3f}"
            lines.append(f"  {c.check:22s} {c.flagged:7d} {c.reviewed:8d} {c.confirmed:9d} {c.false_positives:9d} "
                         f"{rate:>7s} {c.misses:6d}")
        lines.append(f"  top false positives with thumbnails: {len(self.top_false_positives)} "
                     f"({sum(1 for t in self.top_false_positives if t.get('thumbnail'))} with the archived photo)")
        lines += [f"  note: {n}" for n in self.notes]
        if self.html:
            lines += [f"report: {self.html}", f"json:   {self.json}"]
        return "\n".join(lines)


def _under(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def check_score(check: str, pred: pd.Series) -> float | None:
    """How strongly the answer flagged ``check`` (higher: surer); None where there is no score."""
    if check in SCORE_OF:
        value = pred.get(SCORE_OF[check])
    elif check.startswith("prohibited:"):
        probs = pred.get("prohibited")
        value = probs.get(check.split(":", 1)[1]) if isinstance(probs, dict) else None
    elif check in SKU_CHECKS:
        sim = pred.get("sku_similarity")
        value = None if sim is None or (isinstance(sim, float) and math.isnan(sim)) else 1.0 - float(sim)
    else:
        value = None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _threshold(check: str, pred: pd.Series) -> float | None:
    checks = pred.get("checks") if isinstance(pred.get("checks"), dict) else {}
    if check.startswith("prohibited:"):                  # {category: {score, threshold, flag}} since the versioned contract
        entry = (checks.get("prohibited") or {}).get(check.split(":", 1)[1])
        value = entry.get("threshold") if isinstance(entry, dict) else None
        return None if value is None else float(value)
    if check in THRESHOLD_OF and THRESHOLD_OF[check][1]:
        block, key = THRESHOLD_OF[check]
        value = (checks.get(block) or {}).get(key)
        if value is not None and check in SKU_CHECKS:
            return 1.0 - float(value)
        return None if value is None else float(value)
    return None


def _latest_feedback(feedback: pd.DataFrame) -> pd.DataFrame:
    """The last word per (listing, check, kind): a later verdict replaces an earlier one."""
    if feedback.empty:
        return feedback
    return feedback.drop_duplicates(["listing_id", "check", "kind"], keep="last").reset_index(drop=True)


def compute(predictions: pd.DataFrame, feedback: pd.DataFrame, categories: list[str], top: int = 12,
            thumbnail_px: int = 160) -> FpReport:
    """The report's numbers from prediction-log rows and feedback rows (no files written)."""
    preds = predictions[~predictions["request_id"].astype(str).str.startswith("smoke-")]
    listed = preds[preds["listing_id"].notna()].drop_duplicates("listing_id", keep="last")
    preds = pd.concat([listed, preds[preds["listing_id"].isna()]]).sort_values("ts").reset_index(drop=True)
    fb = _latest_feedback(feedback)
    report = FpReport("", "", len(preds), len(feedback), 0)
    by_listing = {lid: i for i, lid in enumerate(preds["listing_id"]) if isinstance(lid, str)}
    reasons = [set(r) if isinstance(r, (list, tuple)) else set() for r in preds["reasons"]]
    seen = {r for rs in reasons for r in rs}
    checks = [c for c in [*CHECKS, *(f"prohibited:{c}" for c in categories)]] + sorted(seen - set(CHECKS) -
                                                                                      {f"prohibited:{c}" for c in categories})
    reviews = fb[fb["kind"] == "review"] if not fb.empty else fb
    misses = fb[fb["kind"] == "miss"] if not fb.empty else fb
    orphan = 0
    unflagged_verdicts = 0
    judged: dict[str, list[tuple[int, bool]]] = {c: [] for c in checks}
    for _, row in reviews.iterrows():
        i = by_listing.get(row["listing_id"])
        if i is None:
            orphan += 1
            continue
        if row["check"] not in reasons[i]:
            unflagged_verdicts += 1
            continue
        judged.setdefault(row["check"], []).append((i, bool(row["confirmed"])))
    missed: dict[str, int] = {c: 0 for c in checks}
    flagged_misses = 0
    for _, row in misses.iterrows():
        i = by_listing.get(row["listing_id"])
        if i is None:
            orphan += 1
            continue
        same = set(SKU_CHECKS) if row["check"] in SKU_CHECKS else {row["check"]}
        if reasons[i] & same:
            flagged_misses += 1
            continue
        missed[row["check"]] = missed.get(row["check"], 0) + 1
    report.reviewed_listings = len({i for v in judged.values() for i, _ in v})
    for check in checks:
        flagged = sum(check in r for r in reasons)
        verdicts = judged.get(check, [])
        fp = sum(not ok for _, ok in verdicts)
        if flagged == 0 and not verdicts and not missed.get(check):
            continue
        report.checks.append(CheckRow(check, flagged, len(verdicts), len(verdicts) - fp, fp,
                                      round(fp / len(verdicts), 4) if verdicts else None, missed.get(check, 0),
                                      flagged - len(verdicts)))
    days = pd.to_datetime(preds["ts"], utc=True).dt.strftime("%Y-%m-%d")
    for check, verdicts in judged.items():
        per_day: dict[str, list[bool]] = {}
        for i, ok in verdicts:
            per_day.setdefault(days.iloc[i], []).append(ok)
        for day in sorted(per_day):
            oks = per_day[day]
            fp = sum(not ok for ok in oks)
            report.trend.append({"day": day, "check": check, "reviewed": len(oks), "false_positives": fp,
                                 "rate": round(fp / len(oks), 4)})
    candidates = []
    for check, verdicts in judged.items():
        rows = [(check_score(check, preds.iloc[i]), i) for i, ok in verdicts if not ok]
        rows.sort(key=lambda t: np.inf if t[0] is None else -t[0])    # surest first, unscored last
        candidates.append(rows)
    per_check = max(2, math.ceil(top / max(1, sum(bool(c) for c in candidates))))
    picked = sorted(((check_name, s, i) for check_name, rows in zip(judged, candidates) for s, i in rows[:per_check]),
                    key=lambda t: np.inf if t[1] is None else -t[1])[:top]
    for check, score, i in picked:
        pred = preds.iloc[i]
        path = pred.get("image_path") if "image_path" in preds else None
        report.top_false_positives.append({
            "check": check, "score": None if score is None else round(score, 4), "threshold": _threshold(check, pred),
            "listing_id": pred["listing_id"], "request_id": pred["request_id"],
            "ts": pd.Timestamp(pred["ts"]).isoformat(), "reasons": list(pred["reasons"]),
            "image_path": path if isinstance(path, str) else None,
            "thumbnail": thumbnail(path if isinstance(path, str) else None, thumbnail_px)})
    if orphan:
        report.notes.append(f"{orphan} feedback row(s) name a listing with no answer in the period (left out)")
    if unflagged_verdicts:
        report.notes.append(f"{unflagged_verdicts} verdict(s) on a check the answer did not flag (left out)")
    if flagged_misses:
        report.notes.append(f"{flagged_misses} miss report(s) on a check that did flag the listing (not misses)")
    missing_photos = sum(1 for t in report.top_false_positives if not t["thumbnail"])
    if missing_photos:
        report.notes.append(f"{missing_photos} top false positive(s) without an archived photo "
                            "(serving.photo_archive off, or the file is gone)")
    return report


# --- HTML -------------------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{margin-bottom:4px} .sub{color:#666;margin-bottom:16px}
table{border-collapse:collapse;margin:8px 0 20px} th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7} td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px} .card{width:190px;border:1px solid #ddd;padding:6px;font-size:12px}
.card img{display:block;margin:0 auto 4px;max-width:180px} .missing{height:120px;background:#eee;display:flex;
align-items:center;justify-content:center;color:#888}
.note{color:#8a6d00}
"""


def _figures(report: FpReport) -> list[str]:
    import plotly.graph_objects as go

    figs = []
    judged = [c for c in report.checks if c.reviewed or c.misses]
    if judged:
        names = [c.check for c in judged]
        fig = go.Figure([go.Bar(name="confirmed", x=names, y=[c.confirmed for c in judged], marker_color="#2e7d32"),
                         go.Bar(name="false positives", x=names, y=[c.false_positives for c in judged],
                                marker_color="#c62828"),
                         go.Bar(name="misses (after sales)", x=names, y=[c.misses for c in judged], marker_color="#6a1b9a")])
        fig.update_layout(barmode="group", title="Reviewed flags and misses per check", height=420,
                          yaxis_title="listings", margin={"t": 50, "b": 120})
        figs.append(fig)
        rated = [c for c in judged if c.false_positive_rate is not None]
        fig = go.Figure(go.Bar(x=[c.check for c in rated], y=[c.false_positive_rate for c in rated],
                               text=[f"{c.false_positive_rate:.2f} ({c.false_positives}/{c.reviewed})" for c in rated],
                               marker_color="#ef6c00"))
        fig.update_layout(title="False-positive rate per check (false positives / reviewed flags)", height=380,
                          yaxis={"range": [0, 1.05], "title": "FP rate"}, margin={"t": 50, "b": 120})
        figs.append(fig)
    if report.trend:
        trend = pd.DataFrame(report.trend)
        fig = go.Figure()
        for check, part in trend.groupby("check"):
            fig.add_trace(go.Scatter(x=part["day"], y=part["rate"], mode="lines+markers", name=check,
                                     customdata=np.stack([part["false_positives"], part["reviewed"]], axis=1),
                                     hovertemplate="%{x}: %{y:.2f} (%{customdata[0]}/%{customdata[1]})"))
        fig.update_layout(title="False-positive rate by day (day of the answer)", height=400,
                          yaxis={"range": [0, 1.05], "title": "FP rate"},
                          xaxis={"title": "day", "type": "category", "categoryorder": "category ascending"})
        figs.append(fig)
    out = []
    for k, fig in enumerate(figs):
        out.append(fig.to_html(full_html=False, include_plotlyjs=(k == 0), config={"displaylogo": False},
                               div_id=f"fp-chart-{k}"))
    return out


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def render_html(report: FpReport) -> str:
    rows = "".join(f"<tr><td>{html.escape(c.check)}</td><td>{c.flagged}</td><td>{c.reviewed}</td><td>{c.confirmed}</td>"
                   f"<td>{c.false_positives}</td><td>{_fmt(c.false_positive_rate)}</td><td>{c.misses}</td>"
                   f"<td>{c.unreviewed}</td></tr>" for c in report.checks)
    trend = pd.DataFrame(report.trend)
    if not trend.empty:
        cells = {(r["check"], r["day"]): f"{r['rate']:.3f} ({r['false_positives']}/{r['reviewed']})"
                 for r in report.trend}
        order = [c.check for c in report.checks if any(k[0] == c.check for k in cells)]
        day_list = sorted({d for _, d in cells})
        head = "".join(f"<th>{html.escape(d)}</th>" for d in day_list)
        body = "".join(f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{cells.get((c, d), '-')}</td>" for d in day_list)
                       + "</tr>" for c in order)
        trend_table = f"<table id='fp-trend'><tr><th>check</th>{head}</tr>{body}</table>"
    else:
        trend_table = "<p>No reviewed flag in the period.</p>"
    cards = []
    for t in report.top_false_positives:
        img = (f"<img src='{t['thumbnail']}' alt='{html.escape(str(t['listing_id']))}'>" if t["thumbnail"]
               else "<div class='missing'>photo not archived</div>")
        thr = "" if t["threshold"] is None else f" (threshold {t['threshold']:.3f})"
        cards.append(f"<div class='card'>{img}<b>{html.escape(t['check'])}</b> score {_fmt(t['score'])}{thr}<br>"
                     f"listing {html.escape(str(t['listing_id']))}<br>{html.escape(t['ts'][:16])}<br>"
                     f"all reasons: {html.escape(', '.join(t['reasons']))}</div>")
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in report.notes)
    charts = "".join(f"<div class='chart'>{f}</div>" for f in _figures(report))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>ReviewOps false positives {html.escape(report.since[:10])} .. {html.escape(report.until[:10])}</title>
<style>{CSS}</style></head><body>
<h1>False positives per check</h1>
<div class="sub">Answers {html.escape(report.since)} .. {html.escape(report.until)}: {report.predictions} listings answered,
{report.reviewed_listings} with a reviewer's verdict, {report.feedback_rows} feedback rows.
False-positive rate = false positives / reviewed flags; a miss is an after-sales report of a defect no check flagged.</div>
{notes}
<h2>Per check</h2>
<table id="fp-checks"><tr><th>check</th><th>flagged</th><th>reviewed</th><th>confirmed</th><th>false positives</th>
<th>FP rate</th><th>misses</th><th>unreviewed</th></tr>{rows}</table>
{charts}
<h2>False-positive rate by day</h2>
{trend_table}
<h2>Top false positives (flagged with a high score, passed by the reviewer)</h2>
<div class="grid" id="fp-top">{''.join(cards) or '<p>No false positive in the period.</p>'}</div>
</body></html>"""


def run_fp_report(root: str | Path | None = None, days: int | None = None, *, until: dt.datetime | None = None,
                  params: Params | None = None) -> FpReport:
    """The report of the ``days`` (default ``monitoring.fp_days``) before ``until`` (default now): HTML + JSON."""
    from .prediction_log import PredictionLog

    root = Path(root or Path.cwd()).resolve()
    params = params or load_params(root / "params.yaml")
    until = (until or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    since = until - dt.timedelta(days=days or params.monitoring.fp_days)
    url = store_url(root, params)
    log = PredictionLog(url)
    store = FeedbackStore(url)
    try:
        predictions, feedback = log.read(since, until), store.read()
    finally:
        log.close()
        store.close()
    report = compute(predictions, feedback, list(params.prohibited.categories), params.monitoring.fp_top,
                     params.monitoring.thumbnail_px)
    report.since, report.until = since.isoformat(timespec="seconds"), until.isoformat(timespec="seconds")
    out = _under(root, params.monitoring.reports_dir) / until.strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    stamp = until.strftime("%H%M%S")
    report.html, report.json = str(out / f"fp-report-{stamp}.html"), str(out / f"fp-report-{stamp}.json")
    Path(report.html).write_text(render_html(report))
    for t in report.top_false_positives:     # the page has the pictures; the result and JSON say whether
        t["thumbnail"] = bool(t["thumbnail"])
    Path(report.json).write_text(json.dumps(report.as_dict(), indent=1, default=str))
    return report
