"""The promotion gate: a family's candidate goes to production only when it earns it on the frozen test split.

Criteria (params.yaml ``gate``): every check's recall at or above its floor; against the model in
production, no check's recall lower by more than ``max_recall_drop`` and the family's auto-pass
share not lower by more than ``max_auto_pass_drop``; the whole reviewer's figures with the candidate; and
the blur, manipulation and SKU candidates on real photos nothing trained on (``gate.real_photos``,
metrics/real_photos.json). A passing candidate is registered (ONNX
bundle, parity check, metadata) and promoted; a refused one leaves production untouched. Each
run writes ``reports/gate/<family>.json`` and ``.md`` with every criterion, value and verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.release import registry
from pipelines.train.evaluate import read_metrics
from pipelines.train import families
from pipelines.params import Params
from pipelines.release.real_photos import METRICS_FILE as REAL_PHOTOS_FILE
from pipelines.release.reviewer import defect_floor, reviewer_figures



@dataclass
class Criterion:
    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str


@dataclass
class GateResult:
    family: str
    verdict: str                      # promoted | unchanged | refused
    candidate: str                    # content hash of the candidate
    production_before: str | None
    production_after: str | None
    criteria: list[Criterion] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    reviewer: dict | None = None      # the whole reviewer with every candidate, on this family's defects (shown)
    figures: str | None = None        # the candidate's own test figures, the family's summary line (shown)
    time: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return self.verdict != "refused"


def _at_floor(name: str, value: float | None, floor: float, params: Params, detail: str) -> Criterion:
    """``value`` at or above ``floor``; None (no positive on the test split) passes only if allowed."""
    if value is None:
        ok = params.gate.allow_unmeasured
        return Criterion(name, None, floor, ok, "no positive on the test split: not measured" + (" (allowed)" if ok else ""))
    return Criterion(name, round(value, 4), floor, value >= floor, detail)


def criteria(family: str, candidate: dict, production: dict | None, params: Params) -> list[Criterion]:
    """Every criterion of the gate for ``candidate`` test metrics against ``production``'s (or none)."""
    recalls, auto_pass = families.get(family).gate_values(candidate)
    out = []
    for check, value in recalls.items():
        floor = defect_floor(params, check)
        if floor is not None:
            out.append(_at_floor(f"recall floor {check}", None if math.isnan(value) else value, floor, params,
                                 f"recall {value:.3f} {'>=' if value >= floor else '<'} floor {floor}"))
    if production is None:
        return out
    prod_recalls, prod_auto = families.get(family).gate_values(production)
    drop = params.gate.max_recall_drop
    for check, value in recalls.items():
        before = prod_recalls.get(check)
        if before is None or math.isnan(before) or math.isnan(value):
            continue
        ok = value >= before - drop - 1e-12
        out.append(Criterion(f"no recall regression {check}", round(value, 4), round(before - drop, 4), ok,
                             f"recall {value:.3f} vs production {before:.3f} (max drop {drop})"))
    ok = auto_pass >= prod_auto - params.gate.max_auto_pass_drop - 1e-12
    out.append(Criterion("no auto-pass regression", round(auto_pass, 4),
                         round(prod_auto - params.gate.max_auto_pass_drop, 4), ok,
                         f"auto-pass share {auto_pass:.3f} vs production {prod_auto:.3f} "
                         f"(max drop {params.gate.max_auto_pass_drop})"))
    return out


def reviewer_criteria(reviewer: dict | None, production: dict | None, params: Params) -> list[Criterion]:
    """The whole reviewer with the candidate (:func:`reviewer_figures`, test split): the photo recall of each of
    the family's defects at its floor (outside_catalogue pooled with the generated photos where measured), and its
    clean auto-pass against the one recorded when the production model was promoted (none recorded: no
    comparison)."""
    test = (reviewer or {}).get("test")
    if not test:
        return []
    out = []
    for key, value in test.items():
        if not key.startswith("photo_recall."):
            continue
        defect = key.removeprefix("photo_recall.")
        floor = defect_floor(params, defect)
        if floor is None:
            continue
        pooled = test.get(f"photo_recall_pooled.{defect}")
        if pooled is not None:           # outside_catalogue: the test split's few photos with the generated ones
            out.append(_at_floor(f"reviewer photo recall {defect}", pooled, floor, params,
                                 f"the whole reviewer sends {pooled:.3f} of {test[f'photos_pooled.{defect}']} "
                                 f"such photos to a person, the test split's and generated ones pooled (test split "
                                 f"alone {value or 0:.3f}; floor {floor})"))
        else:
            out.append(_at_floor(f"reviewer photo recall {defect}", value, floor, params,
                                 f"the whole reviewer sends {value or 0:.3f} of these photos to a person "
                                 f"(floor {floor})"))
    before = ((production or {}).get("test") or {}).get("clean_auto_pass")
    value = test.get("clean_auto_pass")
    if before is not None and value is not None:
        drop = params.gate.max_reviewer_auto_pass_drop
        ok = value >= before - drop - 1e-12
        out.append(Criterion("no reviewer clean auto-pass regression", round(value, 4), round(before - drop, 4), ok,
                             f"whole-reviewer clean auto-pass {value:.3f} vs {before:.3f} when production was "
                             f"promoted (max drop {drop})"))
    return out


# each family's real-photo figures (metrics/real_photos.json: section, key) against gate.real_photos: (floor, at least?)
REAL_PHOTO_CRITERIA = {
    "manipulation": [("manipulation", "false_alarm_rate", "manipulation_false_alarms", False,
                      "unedited real photos flagged as edited"),
                     ("manipulation", "edit_recall", "manipulation_edit_recall", True, "edits made on real photos caught")],
    "blur": [("blur", "pooled_spearman", "blur_pooled_spearman", True,
              "Spearman of the blur score against Gaussian sigma on real photos, pooled"),
             ("blur", "sharp_flagged", "blur_sharp_flagged", False, "sharp real photos flagged as blurred")],
    "sku": [("sku", "unknown_sku_share", "unknown_sku", True, "real non-product photos answered unknown_sku")],
}


def real_photo_criteria(family: str, real: dict | None, params: Params, candidate: str | None = None) -> list[Criterion]:
    """The candidate on real photos nothing trained on (metrics/real_photos.json) against ``gate.real_photos``; a
    figure not measured (no file, none in it, or measured on another model than ``candidate``, a content hash)
    passes only where ``gate.allow_unmeasured`` (tiny test data)."""
    out = []
    measured = ((real or {}).get("candidates") or {}).get(family)
    other = candidate is not None and measured is not None and measured != candidate
    for section, key, limit_name, at_least, what in REAL_PHOTO_CRITERIA.get(family, []):
        limit = getattr(params.gate.real_photos, limit_name)
        value = None if other else ((real or {}).get(section) or {}).get(key)
        name = f"real photos {section} {key}"
        if value is None:
            ok = params.gate.allow_unmeasured
            why = f"measured on {measured}, not this candidate" if other else "not measured"
            out.append(Criterion(name, None, limit, ok, f"{what}: {why} (metrics/real_photos.json: dvc repro "
                                                        f"reviewer real_photos)" + (" (allowed)" if ok else "")))
            continue
        ok = value >= limit if at_least else value <= limit
        out.append(Criterion(name, round(value, 4), limit, ok,
                             f"{what}: {value:.3f} {'>=' if at_least else '<='} {limit} is {'met' if ok else 'not met'}"))
    return out


def calibration(thresholds: dict, params: Params) -> list[Criterion]:
    """One criterion per threshold that calibration left uncalibrated (None: no positive on validation).

    Such a check flags every photo; it passes only where ``gate.allow_unmeasured`` (tiny test data).
    """
    ok = params.gate.allow_unmeasured
    return [Criterion(f"calibrated threshold {name}", None, None, ok,
                      "no positive on validation: the check flags every photo" + (" (allowed)" if ok else ""))
            for name, value in thresholds.items() if value is None]


def judge(family: str, root: Path, params: Params, prod_meta: dict | None = None) -> tuple[list[Criterion], dict | None]:
    """Every criterion for ``family``'s candidate in ``root`` (metrics/, the reviewer stage's and the real-photo
    figures) against the production model's registered metadata (None: no regression criteria), and the
    reviewer figures it was judged on. Pure: registers and promotes nothing."""
    metrics = read_metrics(family, root)
    reviewer = reviewer_figures(family, root)
    real = root / REAL_PHOTOS_FILE
    found = calibration(metrics["thresholds"], params) + criteria(
        family, metrics["test"], prod_meta["metrics"] if prod_meta else None, params) + reviewer_criteria(
        reviewer, prod_meta.get("reviewer") if prod_meta else None, params) + real_photo_criteria(
        family, json.loads(real.read_text()) if real.is_file() else None, params, registry.content_hash(family, root))
    return found, reviewer


def gate_family(family: str, root: Path, params: Params) -> GateResult:
    """Judge ``family``'s candidate (models/ + metrics/), and register and promote it when it passes."""
    families.get(family)                                  # an unknown name fails here, loudly
    candidate = registry.content_hash(family, root)
    current = registry.production().get(family)
    result = GateResult(family, "refused", candidate, current, current)
    prod_meta = registry.model_info(current)["metadata"] if current else None
    form = registry.served_form(family, root, params)
    if prod_meta and prod_meta.get("content_hash") == candidate:
        if registry.same_form(prod_meta, form):
            result.verdict = "unchanged"
            result.reasons.append(f"the candidate is the model in production ({current}): nothing to promote")
            return _report(result, root)
        result.reasons.append(f"repackaged: the model in production ({current}) is these trained files, exported as "
                              f"format {prod_meta.get('export_format', 1)} with INT8 units "
                              f"{sorted(prod_meta.get('int8_units') or [])}; now format {form['export_format']} with "
                              f"{form['int8_units']}")
    result.criteria, result.reviewer = judge(family, root, params, prod_meta)
    result.figures = families.get(family).summary(read_metrics(family, root)["test"])
    failed = [c for c in result.criteria if not c.passed]
    if failed:
        result.reasons += [f"{c.name}: {c.detail}" for c in failed]
        return _report(result, root)
    tag = registry.find_by_content(family, candidate, form) or registry.register(family, root, params)
    registry.promote(family, tag, reason=f"gate passed ({len(result.criteria)} criteria)")
    result.verdict, result.production_after = "promoted", tag
    result.reasons.append(f"all {len(result.criteria)} criteria passed")
    return _report(result, root)


def _report(result: GateResult, root: Path) -> GateResult:
    out = root / "reports" / "gate"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result.family}.json").write_text(json.dumps(asdict(result), indent=1))
    (out / f"{result.family}.md").write_text(markdown(result))
    return result


def markdown(result: GateResult) -> str:
    lines = [f"# Gate: {result.family} — {result.verdict.upper()}", "",
             f"- time: {result.time}", f"- candidate content hash: `{result.candidate}`",
             f"- production before: `{result.production_before}`", f"- production after: `{result.production_after}`",
             ""]
    if result.criteria:
        lines += ["| criterion | value | limit | verdict | detail |", "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.value} | {c.limit} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |"
                  for c in result.criteria]
        lines.append("")
    lines += [f"- {r}" for r in result.reasons]
    if result.figures:
        lines += ["", f"The candidate on the test split: {result.figures}."]
    if result.reviewer:
        lines += ["", "## The whole reviewer with every candidate (metrics/reviewer.json)", "",
                  "| figure | " + " | ".join(result.reviewer) + " |", "|---|" + "---|" * len(result.reviewer)]
        names = list(dict.fromkeys(k for split in result.reviewer.values() for k in split))
        lines += [f"| {k} | " + " | ".join(str(result.reviewer[s].get(k)) for s in result.reviewer) + " |" for k in names]
    return "\n".join(lines) + "\n"
