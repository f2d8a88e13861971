"""``reviewops policy``: move the operating point of one check without retraining.

The policy is the thresholds in the production bundles' ``meta.json`` (written by each family's calibration on
validation, registered with the model, hashed into the ``policy_version`` of every answer and prediction-log row).

- :func:`current`: every production check's threshold, where it came from (calibration, or who set it, when, why)
  and the ``policy_version``;
- :func:`propose`: a new threshold for one check, given or chosen for a photo-recall target on the VALIDATION rows
  of the reviewer's scores (``models/reviewer/scores.parquet``), with its effect on validation, test and the live
  mix (clean auto-pass, photo recall, the whole reviewer's auto-pass) now and proposed, all computed by
  :mod:`pipelines.release.operating_point`. A proposal whose test photo recall falls below the check's gate floor
  is refused unless forced;
- :func:`write_effect_report`: the check's operating curve with both points, ``reports/policy/<time>-<check>.html``;
- :func:`deploy_policy`: the production bundle of the check's family copied with the threshold changed, registered
  (the production model's metadata plus ``policy``) and promoted, the Bento built (its smoke set recomputed with the
  new policy) and deployed blue/green (:mod:`pipelines.release.rollout`); a failed build or deploy moves the
  production pointer back, and the previous instance keeps serving. Record: ``reports/policy_deploy.json``.

The scores were decided with the candidates' thresholds (``models/reviewer/bundles``); before any figure is read
they are re-decided with the production policy, check by check (:func:`rebase`), so "now" is what production
decides. Checks: ``blur``, ``sticker_missing``, ``dirt``, ``manipulation``, ``prohibited:<category>``, ``sku``
(the similarity the SKU alarm compares) and ``sku_margin`` (the margin by which another SKU must not lead).
No torch on this path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import html
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.params import Params
from pipelines.release import operating_point as op
from pipelines.release.reviewer import OUT_DIR, REPORT as OPERATING_POINT_REPORT
from pipelines.serve.bundle import BUNDLE_META, read_meta
from pipelines.train.review import given

SCORES = OUT_DIR / "scores.parquet"
SCORED_BUNDLES = OUT_DIR / "bundles"          # the candidates the scores were decided with
REPORT_DIR = Path("reports") / "policy"
RECORD = Path("reports") / "policy_deploy.json"
DEPLOY_STATE = Path(".reviewops") / "deploy"
BUILD_RECORD = Path("reports") / "build.json"
SPLITS = ("val", "test", "live_mix")
USER_ENV = "REVIEWOPS_USER"
# check -> (family, key of the family's meta.json thresholds); prohibited:<category> -> ("prohibited", category)
CHECKS = {"blur": ("blur", "blur"), "sticker_missing": ("detector", "sticker_missing"), "dirt": ("detector", "dirt"),
          "manipulation": ("manipulation", "manipulation"), "sku": ("sku", "similarity"), "sku_margin": ("sku", "margin")}
SWEPT = {"sku_margin": "sku"}                 # the margin moves with the SKU check's curve (its similarity swept)
TARGET_OF = {"margin": "sku_mismatch", "similarity": "unknown_sku"}   # the SKU calibration's recall targets


class PolicyError(RuntimeError):
    """The policy could not be read, proposed or deployed; the message says why."""


class BelowFloor(PolicyError):
    """The proposal's test photo recall falls below the check's gate floor (``force`` deploys it anyway)."""


def locate(check: str) -> tuple[str, str]:
    """``(family, threshold key)`` of a check name."""
    if check.startswith("prohibited:") and check.split(":", 1)[1]:
        return "prohibited", check.split(":", 1)[1]
    if check in CHECKS:
        return CHECKS[check]
    raise PolicyError(f"unknown check {check!r}: one of {', '.join(CHECKS)} or prohibited:<category>")


def check_names(family: str, meta: dict) -> list[tuple[str, str]]:
    """``(check, key)`` for every threshold of a family's bundle meta."""
    if family == "prohibited":
        return [(f"prohibited:{k}", k) for k in meta["thresholds"]]
    named = {v: k for k, v in CHECKS.items() if v[0] == family}
    return [(named.get((family, k), f"{family}.{k}"), k) for k in meta["thresholds"]]


def _same(a, b) -> bool:
    return a is None and b is None or a is not None and b is not None and math.isclose(float(a), float(b),
                                                                                       rel_tol=0, abs_tol=1e-12)


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def with_threshold(metas: dict, family: str, key: str, value: float | None) -> dict:
    """``metas`` with one threshold replaced (copies only what changes)."""
    return {**metas, family: {**metas[family], "thresholds": {**metas[family]["thresholds"], key: value}}}


# --- the production policy ------------------------------------------------------------------------------

def production_metas(root: Path) -> dict[str, dict]:
    """``{family: meta.json}`` of every production bundle."""
    from pipelines.release import registry

    registry.use_store(root)
    bundles = registry.production_bundles()
    if not bundles:
        raise PolicyError("no production model: run `reviewops gate` first")
    return {family: read_meta(path) for family, path in sorted(bundles.items())}


def _calibration(family: str, root: Path, tag: str, metadata: dict) -> dict[str, str]:
    """Per threshold key, where calibration put it: from ``metrics/<family>.json`` when it is this model's."""
    from pipelines.release import registry
    from pipelines.train.evaluate import read_metrics

    trained = ((metadata.get("policy") or {}).get("trained_model") or (metadata.get("gallery") or {}).get("trained_model")
               or tag)
    try:
        if metadata.get("content_hash") != registry.content_hash(family, root):
            raise LookupError
        metrics = read_metrics(family, root)
    except (LookupError, OSError, ValueError):
        return {k: f"calibration on validation ({trained})" for k in metadata.get("thresholds") or {}}
    target = metrics.get("recall_target", metrics.get("recall_targets"))
    out = {}
    for key in metrics.get("thresholds") or {}:
        t = target.get(key, target.get(TARGET_OF.get(key))) if isinstance(target, dict) else target
        out[key] = (f"calibration on {(metrics.get('threshold_source') or {}).get(key, 'validation')}"
                    + (f" for recall {t}" if t is not None else "") + f" ({trained}, metrics/{family}.json)")
    return out


def _served(root: Path, production: dict) -> dict:
    """The active Bento behind the router and whether it was built from exactly the production models."""
    from pipelines.deploy.router import read_active

    active = (read_active(root / DEPLOY_STATE) or {}).get("bento")
    try:
        build = json.loads((root / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        build = {}
    return {"bento": active, "production": bool(active) and build.get("bento") == active
            and build.get("models") == production}


def current(root: Path) -> dict:
    """The production policy: per family, its model and per check its threshold and where it came from."""
    from pipelines.release import registry
    from pipelines.serve.decision import policy_version

    root = Path(root).resolve()
    registry.use_store(root)
    production = registry.production()
    if not production:
        raise PolicyError("no production model: run `reviewops gate` first")
    metas, families = {}, {}
    for family, tag in sorted(production.items()):
        info = registry.model_info(tag)
        meta = metas[family] = read_meta(info["path"])
        metadata = info["metadata"]
        calibrated = _calibration(family, root, tag, metadata)
        set_by = metadata.get("policy_set") or {}
        checks = {}
        for check, key in check_names(family, meta):
            threshold, entry = meta["thresholds"].get(key), set_by.get(check)
            if entry and _same(entry.get("new"), threshold):
                source = (f"set by {entry.get('user', '?')} at {entry.get('time', '?')}: "
                          f"{entry.get('reason') or 'no reason given'}"
                          + (f" (recall target {entry['recall']} on validation)" if entry.get("recall") is not None else ""))
            else:
                source = calibrated.get(key, "calibration on validation")
            checks[check] = {"threshold": threshold, "source": source}
        families[family] = {"tag": tag, "checks": checks}
    return {"policy_version": policy_version(metas), "families": families, "served": _served(root, production)}


def format_current(info: dict) -> str:
    served = info["served"]
    state = ("deployed" if served["production"] else
             f"NOT deployed yet (active Bento {served['bento'] or 'none'}): run reviewops build && reviewops deploy")
    lines = [f"policy {info['policy_version']} ({state})"]
    for family, f in info["families"].items():
        lines.append(f"{family:13s} {f['tag']}")
        for check, c in f["checks"].items():
            t = "none (flags every photo)" if c["threshold"] is None else f"{c['threshold']:.4f}"
            lines.append(f"  {check:24s} {t:>8s}  {c['source']}")
    return "\n".join(lines)


# --- the scores, re-decided with a policy ---------------------------------------------------------------

def _sku_reason(frame: pd.DataFrame, metas: dict) -> list[str]:
    """The SKU reason an alarmed photo gets (decision.sku_alarm): a listed claim the margin alarms is a mismatch."""
    known = set(metas["sku"].get("gallery_skus", []))
    margin_thr = metas["sku"]["thresholds"].get("margin")
    claimed = [given(c) for c in frame["claimed_sku"]]
    return ["sku_mismatch" if c is not None and c in known and (margin_thr is None or not m > margin_thr)
            else "unknown_sku" for c, m in zip(claimed, frame["sku_margin"].to_numpy(dtype=float))]


def rebase(frame: pd.DataFrame, metas: dict, floors: dict) -> pd.DataFrame:
    """The scores frame with every swept check's reasons (and the decision) as ``metas`` decide them."""
    out = frame.copy()
    reasons = [list(r) for r in out["reasons"]]
    for check in op.checks(out, metas, floors):
        now = op.flags(check, out, metas, [check.threshold])[0]
        kind = _sku_reason(out, metas) if check.sku else None
        for i, flag in enumerate(now):
            mine = any(r in check.reasons for r in reasons[i])
            if flag and not mine:
                reasons[i].append(kind[i] if check.sku else check.reasons[0])
            elif mine and not flag:
                reasons[i] = [r for r in reasons[i] if r not in check.reasons]
    out["reasons"] = reasons
    out["decision"] = ["manual_review" if r else "auto_pass" for r in reasons]
    return out


@dataclasses.dataclass
class Context:
    check: op.Check              # the swept check (for sku_margin: the SKU check, its similarity swept)
    name: str
    family: str
    key: str
    frame: pd.DataFrame          # the scores re-decided with the production policy
    metas: dict
    floors: dict
    tag: str | None
    warnings: list[str]


def _scored_metas(root: Path) -> dict:
    base = root / SCORED_BUNDLES
    return {p.parent.name: read_meta(p.parent) for p in sorted(base.glob(f"*/{BUNDLE_META}"))} if base.is_dir() else {}


def _stale(root: Path, family: str, tag: str | None) -> str | None:
    """A warning when the scores of ``family`` come from other models than production's."""
    from pipelines.release import registry

    if tag is None:
        return None
    try:
        if registry.model_info(tag)["metadata"].get("content_hash") == registry.content_hash(family, root):
            return None
    except (OSError, ValueError, KeyError, registry.RegistryError):
        pass
    return (f"the reviewer scores of {family} come from models/{family}, not from production {tag}: the effect is "
            f"estimated on other models (run `reviewops reviewer` after promoting them)")


def context(root: Path, params: Params, check: str, metas: dict | None = None,
            scores: pd.DataFrame | None = None) -> Context:
    """Everything a proposal reads: the check, the production policy and the scores re-decided with it."""
    from pipelines.release import registry

    root = Path(root).resolve()
    family, key = locate(check)
    floors = dict(params.gate.recall_floors)
    tag = None
    if metas is None:
        metas = production_metas(root)
        tag = registry.production().get(family)
    if family not in metas:
        raise PolicyError(f"no production {family} model: run `reviewops gate` first")
    if key not in metas[family]["thresholds"]:
        raise PolicyError(f"the production {family} bundle has no threshold {key!r} (it has "
                          f"{', '.join(map(str, metas[family]['thresholds'])) or 'none'}): no check {check!r}")
    warnings = []
    if scores is None:
        if not (root / SCORES).is_file():
            raise PolicyError(f"no reviewer scores ({SCORES}): run `reviewops reviewer` (or dvc repro) first")
        scores = pd.read_parquet(root / SCORES)
        scored = _scored_metas(root) or metas
        try:
            for c in op.checks(scores, scored, floors):
                op.verify(c, scores, scored)
        except ValueError as exc:
            raise PolicyError(f"{SCORES} disagrees with the thresholds it was decided with: {exc}") from None
        warnings += filter(None, [_stale(root, family, tag)])
        if family == "sku" and "sku" in scored and scored["sku"].get("gallery_skus") != metas["sku"].get("gallery_skus"):
            warnings.append("the SKU gallery in production differs from the one the scores were matched against")
    scores = scores.assign(reasons=[list(r) for r in scores["reasons"]])
    found = {c.name: c for c in op.checks(scores, metas, floors)}
    swept = found.get(SWEPT.get(check, check))
    if swept is None:
        raise PolicyError(f"{SCORES} has no scores of {check}: run `reviewops reviewer` (or dvc repro) again")
    return Context(swept, check, family, key, rebase(scores, metas, floors), metas, floors, tag, warnings)


# --- a proposal and its effect -------------------------------------------------------------------------

def _at(ctx: Context, part: pd.DataFrame, metas: dict) -> dict:
    """The check's figures on ``part`` under ``metas``: its point on the curve, per-defect recall, overall auto-pass."""
    c = dataclasses.replace(ctx.check, threshold=metas[ctx.family]["thresholds"].get(
        ctx.key if ctx.name not in SWEPT else CHECKS[SWEPT[ctx.name]][1]))
    point = op.curve(c, part, metas, [c.threshold]).iloc[0]
    everyone = op.curve(c, part.assign(**{"truth.clean": True}), metas, [c.threshold]).iloc[0]
    by_defect = {d: _num(op.curve(dataclasses.replace(c, defects=(d,)), part, metas, [c.threshold]).iloc[0]["photo_recall"])
                 for d in c.defects}
    return {"threshold": metas[ctx.family]["thresholds"].get(ctx.key), "clean_auto_pass": _num(point["clean_auto_pass"]),
            "photo_recall": _num(point["photo_recall"]), "photo_recall_by_defect": by_defect,
            "auto_pass": _num(everyone["clean_auto_pass"])}


def for_recall(ctx: Context, target: float) -> float:
    """On validation: the highest threshold (for the SKU similarity and margin, which alarm at or below it: the
    lowest) whose photo recall of the check's defect reaches ``target``, among the observed scores."""
    val = ctx.frame[ctx.frame["split"] == "val"]
    c = ctx.check
    if ctx.name in SWEPT:                        # the margin: one curve point per candidate margin
        values = sorted({float(v) for v in val["sku_margin"].dropna() if math.isfinite(v)})
        recall = [op.curve(c, val, with_threshold(ctx.metas, ctx.family, ctx.key, v), [c.threshold]).iloc[0]["photo_recall"]
                  for v in values]
        low_alarms = True
    else:
        values = [t for t in op.grid(c, val, ctx.metas, max_points=len(val) + 2) if t is not None and math.isfinite(t)]
        recall = list(op.curve(c, val, ctx.metas, values)["photo_recall"]) if values else []
        low_alarms = c.sku
    recall = np.array(recall, dtype=float)
    if not len(values) or np.isnan(recall).all():
        raise PolicyError(f"no validation photo with the defect of {ctx.name} ({', '.join(c.defects)}) or no score: "
                          f"cannot choose a threshold for a recall target; give --threshold")
    ok = np.nan_to_num(recall, nan=-1.0) >= target - 1e-12
    if not ok.any():
        raise PolicyError(f"no threshold of {ctx.name} reaches photo recall {target} on validation "
                          f"(at most {np.nanmax(recall):.3f})")
    picked = np.asarray(values)[ok]
    return float(picked.min() if low_alarms else picked.max())


def propose(root: Path, params: Params, check: str, *, threshold: float | None = None, recall: float | None = None,
            force: bool = False, ctx: Context | None = None) -> dict:
    """A new threshold for ``check`` (given, or chosen for a ``recall`` target on validation) and its effect.

    Raises :class:`BelowFloor` when its test photo recall of a defect falls below that defect's gate floor, unless
    ``force``; :class:`PolicyError` for anything else it cannot propose. ``ctx``: a prepared :func:`context`.
    """
    from pipelines.serve.decision import policy_version

    if (threshold is None) == (recall is None):
        raise PolicyError("give one of a threshold or a recall target")
    if recall is not None and not 0 < recall <= 1:
        raise PolicyError(f"recall target {recall} is not in (0, 1]")
    if threshold is not None and not math.isfinite(threshold):
        raise PolicyError(f"threshold {threshold} is not a finite number")
    ctx = ctx or context(root, params, check)
    new = float(threshold) if threshold is not None else for_recall(ctx, recall)
    old = ctx.metas[ctx.family]["thresholds"].get(ctx.key)
    proposed = with_threshold(ctx.metas, ctx.family, ctx.key, new)
    effect = {}
    for split in SPLITS:
        part = ctx.frame[ctx.frame["split"] == split]
        if part.empty:
            continue
        effect[split] = {"photos": int(len(part)), "clean": int(part["truth.clean"].sum()),
                         "positives": {d: int(part[f"truth.{d}"].sum()) for d in ctx.check.defects},
                         "now": _at(ctx, part, ctx.metas), "proposed": _at(ctx, part, proposed)}
    floors = {d: op.floor_of(ctx.floors, d) for d in ctx.check.defects}
    test = (effect.get("test") or {}).get("proposed", {}).get("photo_recall_by_defect", {})
    below = op.below_floor({d: test[d] for d in ctx.check.defects if test.get(d) is not None}, ctx.floors)
    result = {"check": check, "family": ctx.family, "key": ctx.key, "production": ctx.tag, "old": old, "new": new,
              "recall_target": recall, "chosen_on": "val" if recall is not None else None,
              "policy_version": {"now": policy_version(ctx.metas), "proposed": policy_version(proposed)},
              "effect": effect, "floors": floors, "below_floor": below, "forced": bool(below and force),
              "warnings": ctx.warnings}
    if below and not force:
        d = below[0]
        raise BelowFloor(f"{check} at {new:.4g}: test photo recall of {d} {test[d]:.3f} is below its gate floor "
                         f"{floors[d]:.2f} (now {effect['test']['now']['photo_recall_by_defect'][d]:.3f}); "
                         f"--force deploys it anyway")
    return result


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_proposal(p: dict) -> str:
    how = f"chosen on validation for photo recall >= {p['recall_target']}" if p["recall_target"] is not None else "given"
    old = "none" if p["old"] is None else f"{p['old']:.4f}"
    lines = [f"{p['check']}: {old} -> {p['new']:.4f} ({how}); production {p['production'] or '?'}",
             f"policy {p['policy_version']['now']} -> {p['policy_version']['proposed']}",
             f"{'split':9s} {'photos':>6s} {'clean':>5s} {'pos':>4s}   clean auto-pass   photo recall      auto-pass"]
    for split, e in p["effect"].items():
        n, q = e["now"], e["proposed"]
        lines.append(f"{split:9s} {e['photos']:6d} {e['clean']:5d} {sum(e['positives'].values()):4d}   "
                     f"{_f(n['clean_auto_pass'])} -> {_f(q['clean_auto_pass'])}   {_f(n['photo_recall'])} -> "
                     f"{_f(q['photo_recall'])}   {_f(n['auto_pass'])} -> {_f(q['auto_pass'])}")
    for d in p["below_floor"]:
        lines.append(f"WARNING: test photo recall of {d} below its gate floor {p['floors'][d]:.2f} (forced)")
    lines += [f"warning: {w}" for w in p["warnings"]]
    return "\n".join(lines)


def write_effect_report(root: Path, params: Params, proposal: dict, out: Path | None = None, *,
                        ctx: Context | None = None, max_points: int = 200) -> Path:
    """The check's operating curve per split with the current (star) and proposed (diamond) points, and the
    effect table: ``reports/policy/<time>-<check>.html`` unless ``out``."""
    root = Path(root).resolve()
    ctx = ctx or context(root, params, proposal["check"])
    proposed = with_threshold(ctx.metas, ctx.family, ctx.key, proposal["new"])
    c = ctx.check
    curves, points = {}, {}
    for split in ("test", "val", "live_mix"):
        part = ctx.frame[ctx.frame["split"] == split]
        if op.positives(c, part).any() and part["truth.clean"].any():
            curves[split] = (op.curve(c, part, ctx.metas, op.grid(c, part, ctx.metas, max_points)),
                             op.curve(c, part, ctx.metas, [c.threshold]))
            moved = proposed[ctx.family]["thresholds"].get(ctx.key if ctx.name not in SWEPT else "similarity")
            points[split] = op.curve(c, part, proposed, [moved])
    label = f"{proposal['key']}={proposal['new']:.4f}"
    plot = (f"<img class='plot' src='{op._plot(c, curves, proposed=points, proposed_label=label)}' "
            f"alt='{html.escape(c.name)} operating curve'>" if curves
            else "<p>No split has both positives and clean photos: no curve.</p>")
    rows = []
    for split, e in proposal["effect"].items():
        for when in ("now", "proposed"):
            x = e[when]
            rows.append(f"<tr><td>{split}</td><td>{when}</td><td>{_f(x['threshold'], 4)}</td><td>{_f(x['clean_auto_pass'])}</td>"
                        f"<td>{_f(x['photo_recall'])}</td>"
                        + "".join(f"<td>{_f(x['photo_recall_by_defect'].get(d))}</td>" for d in c.defects)
                        + f"<td>{_f(x['auto_pass'])}</td></tr>")
    note = ("" if ctx.name not in SWEPT else "<p>The curve sweeps the SKU similarity at the current margin; "
            "the diamond is the proposed margin at the current similarity threshold.</p>")
    how = (f"chosen on validation for photo recall &ge; {proposal['recall_target']}" if proposal["recall_target"] is not None
           else "given")
    warn = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in proposal["warnings"])
    below = "".join(f"<p class='warn'>Test photo recall of {html.escape(d)} below its gate floor (forced).</p>"
                    for d in proposal["below_floor"])
    floors = ", ".join(f"{html.escape(d)} {v:.2f}" for d, v in proposal["floors"].items() if v is not None) or "&ndash;"
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Policy proposal: {html.escape(proposal['check'])}</title><style>{op.CSS} .warn{{color:#b71c1c;font-weight:bold}}</style></head><body>
<h1>Policy proposal: {html.escape(proposal['check'])} {_f(proposal['old'], 4)} &rarr; {proposal['new']:.4f}</h1>
<div class="sub">{how}; production {html.escape(str(proposal['production']))}; policy {proposal['policy_version']['now']} &rarr;
{proposal['policy_version']['proposed']}; gate floors: {floors}. Every other check keeps its production flags; the star is
the current threshold, the diamond the proposal ({c.rule()}). Written {_now()}, before anything is deployed.
The whole reviewer's page: {html.escape(str(OPERATING_POINT_REPORT))}.</div>{warn}{below}{note}
<div class="row">{plot}</div>
<table><tr><th>split</th><th>policy</th><th>{html.escape(proposal['key'])}</th><th>clean auto-pass</th><th>photo recall</th>
{''.join(f'<th>recall {html.escape(d)}</th>' for d in c.defects)}<th>auto-pass (all photos)</th></tr>{''.join(rows)}</table>
</body></html>"""
    if out is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        out = root / REPORT_DIR / f"{stamp}-{proposal['check'].replace(':', '-')}.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


# --- the deploy -----------------------------------------------------------------------------------------

def deploy_policy(root: Path, params: Params, check: str, threshold: float, *, reason: str = "",
                  recall: float | None = None, port: int | None = None, ready_timeout: float = 300.0,
                  user: str | None = None, proposal: dict | None = None) -> dict:
    """Serve the production bundle of ``check``'s family with its threshold set to ``threshold``: register (the
    production metadata plus ``policy``), promote, build, deploy blue/green; a failed build or deploy moves the
    production pointer back. A threshold already in production registers nothing. Returns the record."""
    from pipelines.release import registry
    from pipelines.release.rollout import copy_bundle, rollout, timed
    from pipelines.serve.decision import policy_version

    root = Path(root).resolve()
    family, key = locate(check)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise PolicyError(f"threshold {threshold} is not a finite number")
    user = user or os.environ.get(USER_ENV) or getpass.getuser()

    def register(timings: dict) -> dict:
        current_tag = registry.production().get(family)
        if current_tag is None:
            raise PolicyError(f"no production {family} model: run `reviewops gate` first")
        info = registry.model_info(current_tag)
        meta = read_meta(info["path"])
        if key not in meta["thresholds"]:
            raise PolicyError(f"{current_tag} has no threshold {key!r}: no check {check!r}")
        old = meta["thresholds"][key]
        entry = {"check": check, "family": family, "key": key, "old": old, "new": threshold, "base": current_tag}
        if _same(old, threshold):
            print(f"{check} is already {threshold} in production ({current_tag}): nothing to register", flush=True)
            return {**entry, "tag": current_tag, "registered": False}
        started = time.perf_counter()
        metadata = dict(info["metadata"])
        when = _now()
        change = {"check": check, "key": key, "old": old, "new": threshold, "reason": reason, "recall": recall,
                  "time": when, "user": user, "base_model": current_tag,
                  "trained_model": ((metadata.get("policy") or {}).get("trained_model")
                                    or (metadata.get("gallery") or {}).get("trained_model") or current_tag)}
        thresholds = {**meta["thresholds"], key: threshold}
        metadata.update(policy=change, policy_set={**(metadata.get("policy_set") or {}), check: change},
                        thresholds=thresholds, registered_at=when)
        with tempfile.TemporaryDirectory(prefix=f"bundle-{family}-policy-") as tmp:
            bundle = copy_bundle(Path(info["path"]), Path(tmp) / "bundle")
            (bundle / BUNDLE_META).write_text(json.dumps({**meta, "thresholds": thresholds}, indent=1, sort_keys=True))
            tag = registry.register_bundle(family, bundle, metadata)
        registry.promote(family, tag, reason=f"policy {check} {old} -> {threshold}" + (f": {reason}" if reason else ""))
        timed(timings, f"register and promote {tag}", started)
        return {**entry, "tag": tag, "registered": True}

    done = rollout(root, params, family, register, port=port, ready_timeout=ready_timeout, restore=True)
    result = {**done["registered"], "reason": reason, "recall_target": recall, "user": user,
              "policy_version": policy_version(production_metas(root)),
              **{k: done[k] for k in ("bento", "deploy", "timings", "seconds")}}
    if proposal is not None:
        result["effect"] = {k: proposal.get(k) for k in ("effect", "floors", "below_floor", "forced", "report")}
    (root / RECORD).parent.mkdir(parents=True, exist_ok=True)
    (root / RECORD).write_text(json.dumps(result, indent=1, default=str))
    return result
