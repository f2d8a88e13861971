"""The operating-point report (pipelines/release/operating_point.py): curves anchored on decide()'s own answers,
monotone in the threshold, and the page for the trained tiny project opened in headless Chromium."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from pipelines.params import load_params
from pipelines.release.operating_point import (below_floor, checks, curve, floor_of, flags, grid, nearest, photo_recall,
                                               positives, recorded, redecide, verify, write_report)
from pipelines.release.reviewer import _flat
from pipelines.serve.decision import decide
from tests.monitoring.test_reports_in_browser import chromium, needs_browser, not_blank, rendered

CATS = ["cash", "knife"]
METAS = {
    "sku": {"thresholds": {"similarity": 0.5, "margin": -0.1}, "gallery_skus": ["a", "b", "c"],
            "sku_categories": {"a": "phone", "b": "phone", "c": "headphones"}},
    "blur": {"thresholds": {"blur": 0.5}},
    "detector": {"thresholds": {"sticker_missing": 0.5, "dirt": 0.6}, "sticker_required_categories": ["phone"],
                 "max_boxes": 8, "box_confidence": 0.25, "centering_tolerance": 0.12, "border": 0.01},
    "prohibited": {"thresholds": {"cash": 0.5, "knife": 0.45}},
    "manipulation": {"thresholds": {"manipulation": 0.55}},
}
FLOORS = {"sku_mismatch": 0.95, "unknown_sku": 0.9, "blur": 0.95, "sticker_missing": 0.95, "dirt": 0.9,
          "centring": 0.95, "prohibited": 0.9, "manipulation": 0.9}


def scored(n: int = 400, seed: int = 0, metas: dict = METAS) -> pd.DataFrame:
    """A scores frame as reviewer.score writes it: random raw outputs, truth loosely tied to them, decided by decide()."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        shown = rng.choice(["a", "b", "c", "zz"], p=[0.4, 0.3, 0.2, 0.1])
        claimed = shown if rng.random() < 0.8 else rng.choice(["a", "b", "zz", "none"])
        category = rng.choice(["phone", "headphones", "none"], p=[0.5, 0.3, 0.2])
        t = {d: rng.random() < 0.15 for d in ("blur", "sticker_missing", "dirt", "manipulation", *CATS)}
        score = lambda hit: float(np.clip(rng.normal(0.7 if hit else 0.3, 0.18), 0, 1))
        centre = 0.5 + (0.3 if rng.random() < 0.05 else 0.0)
        sims = sorted(([s, score(s == shown) + 0.01 * k] for k, s in enumerate(("a", "b", "c"))), key=lambda c: -c[1])
        raw = {"sku": {"predicted": sims[0][0], "similarity": sims[0][1], "candidates": sims},
               "blur": score(t["blur"]), "defects": {"sticker_missing": score(t["sticker_missing"]), "dirt": score(t["dirt"])},
               "boxes": {"sticker": [], "dirt": [], "product": [[centre - 0.2, 0.3, centre + 0.2, 0.7, 0.9]]},
               "prohibited": {c: score(t[c]) for c in CATS}, "manipulation": score(t["manipulation"])}
        answer = decide(raw, metas, sku_id=None if claimed == "none" else claimed,
                        category=None if category == "none" else category)
        truth = {f"truth.{d}": bool(v) for d, v in t.items() if d not in CATS}
        truth.update({f"truth.prohibited:{c}": bool(t[c]) for c in CATS})
        truth.update({"truth.prohibited": any(t[c] for c in CATS), "truth.off_centre": centre != 0.5,
                      "truth.wrong_claim": shown != "zz" and claimed != shown, "truth.outside_catalogue": shown == "zz"})
        truth["truth.clean"] = not any(truth.values())
        rows.append({"listing_id": f"l{i:04d}", "path": f"/nowhere/{i}.jpg", "sku_id": shown, "claimed_sku": claimed,
                     "category": category, "split": "test" if i % 3 else "val", **truth,
                     "decision": answer["decision"], "reasons": answer["reasons"], **_flat(answer, raw)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return scored()


def test_every_check_is_found_and_its_flags_at_the_current_threshold_are_the_recorded_reasons(frame):
    found = checks(frame, METAS, FLOORS)
    assert [c.name for c in found] == ["blur", "sticker_missing", "dirt", "prohibited:cash", "prohibited:knife",
                                       "manipulation", "sku"]
    assert found[-1].floors == {"sku_mismatch": 0.95, "unknown_sku": 0.9} and found[3].floors == {"prohibited": 0.9}
    for check in found:
        verify(check, frame, METAS)                                # raises on any disagreement
        assert recorded(check, frame).any()
    sticker = found[1]
    headphones = (frame["category"] == "headphones").to_numpy()
    assert not flags(sticker, frame, METAS, [0.0])[0][headphones].any()   # not required there, whatever the score


def test_the_curve_at_the_current_threshold_is_the_decision_recorded(frame):
    for split, part in frame.groupby("split"):
        auto = part["decision"] == "auto_pass"
        clean_auto_pass = auto[part["truth.clean"]].mean()
        for check in checks(part, METAS, FLOORS):
            now = curve(check, part, METAS, [check.threshold]).iloc[0]
            assert now["clean_auto_pass"] == pytest.approx(clean_auto_pass), (split, check.name)
            assert now["photo_recall"] == pytest.approx((~auto[positives(check, part)]).mean()), (split, check.name)
            swept = curve(check, part, METAS, grid(check, part, METAS))     # the current point lies on the swept curve
            assert ((swept["clean_auto_pass"] - now["clean_auto_pass"]).abs() < 1e-12).any()


def test_raising_a_threshold_never_lowers_clean_auto_pass(frame):
    for check in checks(frame, METAS, FLOORS):
        thresholds = [t for t in grid(check, frame, METAS, max_points=50) if t is not None]
        c = curve(check, frame, METAS, thresholds)
        assert c["threshold"].is_monotonic_increasing and len(c) > 10
        assert c["clean_auto_pass"].nunique() > 2, check.name         # the sweep moves the figure
        cap, rec = np.diff(c["clean_auto_pass"]), np.diff(c["photo_recall"])
        if check.sku:      # a higher similarity threshold alarms more
            assert (cap <= 1e-12).all() and (rec >= -1e-12).all(), check.name
        else:
            assert (cap >= -1e-12).all() and (rec <= 1e-12).all(), check.name
    blur = checks(frame, METAS, FLOORS)[0]
    ends = curve(blur, frame, METAS, [-np.inf, np.inf])
    assert ends["photo_recall"][0] == 1.0 and ends["clean_auto_pass"][0] == 0.0


def test_photo_recall_counts_each_defects_photos_sent_to_a_person_and_below_floor_names_those_under_theirs():
    part = pd.DataFrame({"truth.clean": [True, False, False, False, False],
                         "truth.dirt": [False, True, True, False, False],
                         "truth.prohibited:cash": [False, False, False, True, False],
                         "truth.prohibited": [False, False, False, True, False],
                         "truth.off_centre": [False, True, False, False, True],
                         "truth.blur": [False] * 5})                      # no photo: left out
    manual = np.array([False, True, False, True, True])
    assert photo_recall(part, manual) == {"dirt": 0.5, "prohibited:cash": 1.0, "prohibited": 1.0, "off_centre": 1.0}
    assert "prohibited" not in photo_recall(part, manual, overall=False)
    assert below_floor(photo_recall(part, manual), FLOORS) == ["dirt"]     # 0.5 < 0.9; off_centre's floor is centring's
    assert [floor_of(FLOORS, d) for d in ("prohibited:cash", "off_centre", "wrong_claim", "outside_catalogue", "dirt")] \
        == [0.9, 0.95, 0.95, 0.9, 0.9]
    assert floor_of(FLOORS, "no_such_check") is None and below_floor({"no_such_check": 0.0}, FLOORS) == []


def test_an_uncalibrated_check_flags_every_photo_and_sits_at_the_far_end_of_its_sweep():
    metas = {**METAS, "prohibited": {"thresholds": {"cash": 0.5, "knife": None}}}
    frame = scored(120, seed=3, metas=metas)
    knife = next(c for c in checks(frame, metas, FLOORS) if c.name == "prohibited:knife")
    verify(knife, frame, metas)
    assert recorded(knife, frame).all() and (frame["decision"] == "manual_review").all()
    thresholds = grid(knife, frame, metas)
    assert thresholds[0] is None and thresholds[-1] == np.inf
    c = curve(knife, frame, metas, thresholds)
    assert c["clean_auto_pass"].iloc[0] == 0.0 and c["photo_recall"].iloc[0] == 1.0
    assert c["clean_auto_pass"].iloc[-1] > 0                   # calibrated to flag nothing, clean photos would pass


def test_a_recorded_reason_the_flags_do_not_reproduce_is_refused(frame, tmp_path):
    broken = frame.copy()
    i = broken.index[broken["reasons"].map(lambda r: "blur" in r)][0]
    broken.at[i, "reasons"] = [r for r in broken.at[i, "reasons"] if r != "blur"]
    with pytest.raises(ValueError, match="operating point of blur.*l0"):
        write_report(tmp_path, broken, METAS, FLOORS, tmp_path / "op.html")
    assert not (tmp_path / "op.html").exists()


def test_the_photos_nearest_the_threshold_are_misses_and_false_alarms_closest_first(frame):
    blur = checks(frame, METAS, FLOORS)[0]
    near = nearest(blur, frame, METAS, 6)
    assert len(near) == 6 and set(near["kind"]) == {"missed", "false alarm"}
    missed, alarms = near[near["kind"] == "missed"], near[near["kind"] == "false alarm"]
    assert missed["truth.blur"].all() and (missed["blur_score"] < 0.5).all()
    assert alarms["truth.clean"].all() and (alarms["blur_score"] >= 0.5).all()
    assert missed["dist"].is_monotonic_increasing and alarms["dist"].is_monotonic_increasing
    closest_miss = (0.5 - frame.loc[frame["truth.blur"] & (frame["blur_score"] < 0.5), "blur_score"]).min()
    assert missed["dist"].iloc[0] == pytest.approx(closest_miss)


def test_the_page_has_no_nan_and_marks_cells_below_their_floor(frame, tmp_path):
    out = write_report(tmp_path, frame, METAS, FLOORS, tmp_path / "r" / "op.html", thumbnails=4, max_points=30)
    page = out.read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    assert not re.search(r"\b(nan|NaN|inf|None)\b", text)
    assert page.count("<section class='check'") == 7 and page.count("class='plot'") == 7
    assert "class='below'" in page and "no photo" in page          # photos under /nowhere: a placeholder, no <img>


@pytest.mark.slow
@needs_browser
def test_redecided_at_the_bundles_thresholds_is_what_decide_recorded_and_a_moved_threshold_moves_it(trained_project):
    from pipelines.serve.bundle import read_meta

    root = trained_project
    scores = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    metas = {p.name: read_meta(p) for p in sorted((root / "models" / "reviewer" / "bundles").iterdir())}
    floors = json.loads((root / "metrics" / "reviewer.json").read_text())["floors"]
    found = checks(scores, metas, floors)
    manual, own = redecide(scores, metas, floors, {})
    assert (manual == (scores["decision"] == "manual_review").to_numpy()).all()
    assert all((own[c.name] == recorded(c, scores)).all() for c in found)
    moved = next(c for c in found if recorded(c, scores).any())           # a check that flagged something
    after, own_after = redecide(scores, metas, floors, {moved.name: -math.inf if moved.sku else math.inf})
    assert not own_after[moved.name].any()                                 # it flags nothing now, the others as before
    assert all((own_after[c.name] == own[c.name]).all() for c in found if c.name != moved.name)
    assert (after <= manual).all()


def test_the_report_of_the_trained_project_opens_in_chromium(trained_project, tmp_path):
    from pipelines.serve.bundle import read_meta

    root = trained_project
    scores = pd.read_parquet(root / "models" / "reviewer" / "scores.parquet")
    metas = {p.name: read_meta(p) for p in sorted((root / "models" / "reviewer" / "bundles").iterdir())}
    floors = json.loads((root / "metrics" / "reviewer.json").read_text())["floors"]
    out = write_report(root, scores, metas, floors, tmp_path / "reports" / "reviewer" / "operating_point.html")
    expected = checks(scores, metas, floors)
    probe = tmp_path / "probe.html"       # the page plus a script that, once loaded, writes what the images did
    probe.write_text(out.read_text().replace("</body>", """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      document.body.insertAdjacentHTML('beforeend', `<p id="probe">images ${imgs.length} loaded ${
        imgs.filter(i => i.complete && i.naturalWidth > 0).length}</p>`);});</script></body>"""))
    dom = rendered(probe, tmp_path)
    found = re.search(r'id="probe">images (\d+) loaded (\d+)<', dom)
    assert found, "the load script did not run"
    total, loaded = map(int, found.groups())
    assert loaded == total > 0                                  # every plot and thumbnail decoded
    categories = load_params(trained_project / "params.yaml").prohibited.categories
    assert dom.count('class="plot"') + dom.count("no curve") == len(expected) == 5 + len(categories)
    sections = re.findall(r'<section class="check" id="check-([^"]+)"', dom)
    assert sections == [c.name.replace(":", "-") for c in expected]
    assert 'id="summary"' in dom and "clean auto-pass" in dom
    text = re.sub(r"<[^>]+>", " ", dom)
    assert not re.search(r"\b(nan|NaN|inf|None)\b", text)
    png = tmp_path / "operating_point.png"
    shot = chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,3000", "--hide-scrollbars", out.resolve().as_uri())
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    not_blank(png)
