"""The SKU gallery: every catalogue SKU with its reference photos, a DVC-tracked directory ``gallery/``.

The SKU check matches a photo's embedding against the gallery's photos. The gallery is data, versioned
like a batch (``gallery.dvc`` committed in git, the photos in DVC) and changed without retraining:

    gallery/manifest.parquet   one row per photo: sku_id, category, image (photos/<sha256>.jpg), sha256,
                               source (data:<batch>/<listing_id> | enrolled), added (ISO UTC time)
    gallery/removed.json       SKUs removed by hand ({sku_id: time}); ``seed`` does not enrol them again
    gallery/photos/*.jpg       the photos, named by their SHA-256

``seed`` enrols every catalogue SKU of the versioned train split with ``train.sku.gallery_per_sku`` photos,
defect-free first (``pick``), and tops up a SKU that had fewer; ``add`` enrols a SKU (or adds photos to one)
from photo files validated like a batch's photos; ``remove`` drops a SKU. Each change is one transaction
under ``repo_lock``: photos copied, manifest written, ``dvc add gallery``, git commit (when the project is a
git work tree), ``dvc push``; a step that fails undoes the earlier ones, so the gallery is as it was.
``pipelines.release.gallery`` embeds the gallery with the production SKU model and deploys it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from pipelines.params import Params

GALLERY_DIR = Path("gallery")
POINTER = Path("gallery.dvc")
MANIFEST = "manifest.parquet"
REMOVED = "removed.json"
PHOTOS = "photos"
COLUMNS = ("sku_id", "category", "image", "sha256", "source", "added")
SOURCE_ENROLLED = "enrolled"
SKU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class NoGallery(RuntimeError):
    """The project has no gallery (yet); the message says what to run."""


class GalleryError(ValueError):
    """A gallery change refused (unknown SKU, bad photo, ...); nothing was changed."""


# --------------------------------------------------------------------------- reading

def _root(root: str | Path | None) -> Path:
    return Path(root if root is not None else Path.cwd()).resolve()


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def read_gallery(root: str | Path | None = None) -> pd.DataFrame:
    """The gallery's manifest with an absolute ``path`` per photo; NoGallery when there is none."""
    root = _root(root)
    path = root / GALLERY_DIR / MANIFEST
    if not path.is_file():
        if (root / POINTER).is_file():
            raise NoGallery(f"the SKU gallery of {root} is versioned ({POINTER}) but not in the workspace: "
                            f"run `dvc pull {POINTER}` (or `dvc checkout {POINTER}`)")
        raise NoGallery(f"no SKU gallery in {root}: run `reviewops gallery seed` (after `reviewops version` of a "
                        f"batch), or enrol a SKU with `reviewops gallery add SKU PHOTOS...`")
    df = pd.read_parquet(path)
    df["path"] = [str(root / GALLERY_DIR / rel) for rel in df["image"]]
    return df


def _removed(root: Path) -> dict[str, str]:
    path = root / GALLERY_DIR / REMOVED
    return json.loads(path.read_text()) if path.is_file() else {}


def _current(root: Path) -> pd.DataFrame:
    try:
        return read_gallery(root).drop(columns=["path"])
    except NoGallery:
        if (root / POINTER).is_file():
            raise
        return _empty()


def version(root: str | Path | None = None) -> str | None:
    """The gallery's version: DVC's md5 of the directory (``gallery.dvc``), None before the first change."""
    pointer = _root(root) / POINTER
    if not pointer.is_file():
        return None
    outs = (yaml.safe_load(pointer.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def show(root: str | Path | None = None) -> dict:
    """SKUs (category, photo count), totals, version, the last change and the SKUs removed by hand."""
    from pipelines.data.version import git_toplevel

    root = _root(root)
    df = read_gallery(root)
    skus = {sku: {"category": str(g["category"].iloc[0]), "photos": int(len(g))}
            for sku, g in df.groupby("sku_id", sort=True)}
    commit = None
    if git_toplevel(root) is not None:
        out = subprocess.run(["git", "log", "-1", "--format=%H %cI %s", "--", str(POINTER)], cwd=root,
                             capture_output=True, text=True).stdout.strip()
        if out:
            sha, when, subject = out.split(" ", 2)
            commit = {"commit": sha, "time": when, "subject": subject}
    return {"version": version(root), "n_skus": len(skus), "n_photos": int(len(df)), "skus": skus,
            "last_added": str(df["added"].max()) if len(df) else None, "last_commit": commit,
            "removed": sorted(_removed(root))}


def format_show(info: dict, per_sku: int | None = None) -> str:
    """``reviewops gallery show``: one line per SKU under a summary."""
    commit = info["last_commit"]
    last = f"{commit['time']} {commit['commit'][:10]} {commit['subject']}" if commit else info["last_added"]
    lines = [f"gallery {info['version'] or '(not versioned)'}: {info['n_skus']} SKUs, {info['n_photos']} photos; "
             f"last change {last}"]
    short = [s for s, v in info["skus"].items() if per_sku and v["photos"] < per_sku]
    if short:
        lines.append(f"{len(short)} SKUs have fewer than {per_sku} photos (seed tops them up from new batches): "
                     f"{', '.join(short[:10])}{' ...' if len(short) > 10 else ''}")
    if info["removed"]:
        lines.append(f"removed by hand (seed leaves them out): {', '.join(info['removed'])}")
    lines += [f"  {sku:28s} {v['category']:11s} {v['photos']} photo{'s' if v['photos'] != 1 else ''}"
              for sku, v in info["skus"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- choosing photos from the data

def _clean_first(df: pd.DataFrame, blur_cutoff: float) -> pd.DataFrame:
    defects = (df["blur_score"] >= blur_cutoff) | df["manipulated"] | df["off_centre"] | df["dirt"] | \
        df["prohibited"].map(len).gt(0)
    key = df["listing_id"].map(lambda s: hashlib.sha256(s.encode()).hexdigest())
    return df.assign(_defects=defects.to_numpy(), _key=key).sort_values(["_defects", "_key"])


def pick(train_df: pd.DataFrame, skus, per_sku: int, blur_cutoff: float) -> pd.DataFrame:
    """``per_sku`` training photos per SKU of ``skus``, defect-free ones first, in a stable order."""
    ranked = _clean_first(train_df[train_df["sku_id"].isin(list(skus))], blur_cutoff)
    return ranked.groupby("sku_id", sort=True).head(per_sku).drop(columns=["_defects", "_key"]).reset_index(drop=True)


# --------------------------------------------------------------------------- validating enrolled photos

def _photo_problems(path: Path, params: Params, repo: Path) -> tuple[str | None, list[str]]:
    """(sha256, problems) of one photo file, by the per-image checks of batch validation."""
    from PIL import Image, ImageFile

    from pipelines.data.dataset import read_test_split
    from pipelines.data.phash import near_duplicates
    from pipelines.data.validate import _image_facts

    path = Path(path).resolve()
    if not path.is_file():
        return None, ["no such file"]
    was = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail, as in validate.compute_facts
    try:
        facts = _image_facts(path.parent, path.name)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = was
    if not facts["decodes"]:
        return facts["file_sha256"], ["image file does not decode (truncated or corrupt JPEG)"]
    problems = []
    with Image.open(path) as im:
        if im.format != "JPEG":
            problems.append(f"is a {im.format} image; gallery photos are JPEG, like batch photos")
    lo, hi = params.validation.min_side, params.validation.max_side
    w, h = facts["decoded_width"], facts["decoded_height"]
    if not (lo <= w <= hi and lo <= h <= hi):
        problems.append(f"is {w}x{h} px; each side must be within [validation.min_side, validation.max_side] "
                        f"= [{lo}, {hi}]")
    frozen = read_test_split(repo) or {}
    pairs = [(i, p) for i, p in zip(frozen.get("listing_ids", []), frozen.get("phash", [])) if p is not None]
    hits = near_duplicates([facts["phash"]], [p for _, p in pairs], params.validation.phash_max_distance)
    if hits:
        _, j, d = hits[0]
        problems.append(f"near-duplicates frozen test photo {pairs[j][0]} (pHash distance {d}): test photos never "
                        f"enter the gallery")
    return facts["file_sha256"], problems


# --------------------------------------------------------------------------- the transaction

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_manifest(df: pd.DataFrame, path: Path) -> None:
    df = df[list(COLUMNS)].sort_values(["sku_id", "added", "sha256"]).reset_index(drop=True)
    tmp = path.with_suffix(".parquet.tmp")
    df.astype(str).to_parquet(tmp, index=False)
    tmp.replace(path)


def _commit(root: Path, after: pd.DataFrame, copies: dict[str, Path], removed: dict[str, str], message: str,
            push: bool) -> dict:
    """Write the gallery ``after`` (new photos: sha256 -> source file), dvc add, commit, push; undone on failure."""
    from pipelines.data.version import DVC_INFRA, VersionError, _configure_remote, dvc, git, git_toplevel

    gdir, pointer, ignore = root / GALLERY_DIR, root / POINTER, root / ".gitignore"
    photos = gdir / PHOTOS
    in_git = git_toplevel(root) is not None
    if in_git and subprocess.run(["git", "check-ignore", "-q", str(POINTER)], cwd=root).returncode == 0:
        raise GalleryError(f"{POINTER} would be git-ignored, so the gallery could not be committed: no .gitignore "
                           f"may ignore it")
    before = {p: p.read_bytes() if p.is_file() else None for p in (gdir / MANIFEST, gdir / REMOVED, pointer, ignore)}
    created = not gdir.exists()
    keep = set(after["sha256"])
    drop = [p for p in photos.glob("*") if p.is_file() and p.stem not in keep] if photos.is_dir() else []
    undo: list = []
    trash = Path(tempfile.mkdtemp(prefix="gallery-", dir=root / ".dvc" / "tmp"))
    try:
        photos.mkdir(parents=True, exist_ok=True)
        for sha, src in copies.items():
            dest = photos / f"{sha}.jpg"
            if not dest.exists():
                undo.append(lambda dest=dest: dest.unlink(missing_ok=True))
                shutil.copyfile(src, dest)
        for p in drop:
            shutil.move(str(p), str(trash / p.name))
            undo.append(lambda p=p: shutil.move(str(trash / p.name), str(p)))
        undo.append(lambda: [path.write_bytes(data) if data is not None else path.unlink(missing_ok=True)
                             for path, data in before.items()])
        _write_manifest(after, gdir / MANIFEST)
        if removed:
            (gdir / REMOVED).write_text(json.dumps(removed, indent=1, sort_keys=True) + "\n")
        else:
            (gdir / REMOVED).unlink(missing_ok=True)
        remote = _configure_remote(root, None)
        dvc(root, "add", "-q", str(GALLERY_DIR))
        commit = None
        if in_git:
            ours = [str(POINTER)] + ([".gitignore"] if ignore.is_file() and ignore.read_bytes() != before[ignore] else [])
            paths = ours + [f for f in DVC_INFRA if (root / f).exists()]
            undo.append(lambda: subprocess.run(["git", "reset", "-q", "--", *ours], cwd=root, capture_output=True))
            git(root, "add", "--", *paths)
            git(root, "commit", "-q", "-m", message, "--", *paths)
            commit = git(root, "rev-parse", "HEAD").strip()
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # keep undoing; the original error is what the caller needs
                pass
        if created and gdir.is_dir():
            shutil.rmtree(gdir, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)
    pushed = False
    if push:
        try:
            dvc(root, "push", str(POINTER))  # not -q: it silences why a push failed
            pushed = True
        except VersionError as err:
            where = f" (commit {commit[:10]})" if commit else ""
            raise VersionError(f"the gallery change is committed locally{where} but the push to {remote} failed; "
                               f"`dvc push {POINTER}` retries it.\n{err}") from err
    return {"changed": True, "commit": commit, "version": version(root), "pushed": pushed,
            "n_skus": int(after["sku_id"].nunique()), "n_photos": int(len(after)), "message": message}


def _unchanged(root: Path, df: pd.DataFrame, message: str) -> dict:
    return {"changed": False, "commit": None, "version": version(root), "pushed": False,
            "n_skus": int(df["sku_id"].nunique()), "n_photos": int(len(df)), "message": message}


def _locked(root: Path):
    from pipelines.data.version import _init_dvc, repo_lock

    _init_dvc(root)
    return repo_lock(root)


# --------------------------------------------------------------------------- changes

def seed(root: str | Path | None, params: Params, *, push: bool = True) -> dict:
    """Enrol every catalogue SKU of the versioned train split with ``gallery_per_sku`` photos (``pick``).

    A SKU already enrolled with fewer photos is topped up; SKUs removed by hand are left out; a photo
    already in the gallery is never added twice. Nothing to add: no commit (``changed`` False).
    """
    from pipelines.data.dataset import split_frame, versioned_manifest

    root = _root(root)
    settings = params.train.sku
    data = versioned_manifest(root)
    if data.empty:
        raise GalleryError(f"no versioned data in {root}: version a batch first (reviewops version data/incoming/<batch>)")
    train = split_frame(data, "train")
    train = train[(train["sku_id"] != "none") & ~train["new_sku"].astype(bool)].drop_duplicates("sha256")
    with _locked(root):
        current, removed = _current(root), _removed(root)
        have = current["sku_id"].value_counts()
        need = {s: settings.gallery_per_sku - int(have.get(s, 0)) for s in sorted(set(train["sku_id"]) - set(removed))}
        need = {s: n for s, n in need.items() if n > 0}
        candidates = train[train["sku_id"].isin(list(need)) & ~train["sha256"].isin(set(current["sha256"]))]
        chosen = pick(candidates, need, settings.gallery_per_sku, settings.gallery_blur_cutoff)
        chosen = chosen[chosen.groupby("sku_id").cumcount().to_numpy() < chosen["sku_id"].map(need).to_numpy()]
        if chosen.empty:
            return {**_unchanged(root, current, "gallery: nothing to enrol from the versioned train split"),
                    "enrolled": {}}
        now = _now()
        rows = pd.DataFrame({"sku_id": chosen["sku_id"], "category": chosen["category"],
                             "image": [f"{PHOTOS}/{s}.jpg" for s in chosen["sha256"]], "sha256": chosen["sha256"],
                             "source": [f"data:{b}/{i}" for b, i in zip(chosen["batch"], chosen["listing_id"])],
                             "added": now})
        new_skus = sorted(set(rows["sku_id"]) - set(current["sku_id"]))
        batches = ", ".join(sorted(set(chosen["batch"])))
        message = (f"gallery: seed {len(rows)} photos of {rows['sku_id'].nunique()} SKUs ({len(new_skus)} new) "
                   f"from {batches}")
        after = pd.concat([current, rows], ignore_index=True)
        result = _commit(root, after, dict(zip(chosen["sha256"], map(Path, chosen["path"]))), removed, message, push)
    return {**result, "enrolled": {s: int(n) for s, n in rows["sku_id"].value_counts().sort_index().items()}}


def _category(sku_id: str, category: str | None, current: pd.DataFrame) -> str:
    from pipelines.data.synth import catalog

    enrolled = current.loc[current["sku_id"] == sku_id, "category"]
    if category is not None and category not in catalog.PRODUCT_TYPES:
        raise GalleryError(f"unknown category {category!r}: expected one of {', '.join(catalog.PRODUCT_TYPES)}")
    if len(enrolled):
        if category is not None and category != enrolled.iloc[0]:
            raise GalleryError(f"SKU {sku_id} is enrolled as {enrolled.iloc[0]}, not {category}: remove it first "
                               f"to change its category")
        return str(enrolled.iloc[0])
    if category is not None:
        return category
    known = catalog.sku_index().get(sku_id)
    if known is None:
        raise GalleryError(f"SKU {sku_id} is not in the catalogue: give its category with --category "
                           f"({', '.join(catalog.PRODUCT_TYPES)})")
    return known.product_type


def add(root: str | Path | None, params: Params, sku_id: str, photos: list[Path], category: str | None = None, *,
        push: bool = True) -> dict:
    """Enrol ``sku_id`` with ``photos`` (at least ``gallery_per_sku`` for a SKU not enrolled yet), or add photos to it.

    Every photo is checked as batch validation checks one (decodes, JPEG, sides within the limits, not a
    near-duplicate of a frozen test photo) and must not be in the gallery already; any refusal changes nothing.
    """
    root = _root(root)
    if sku_id == "none" or not SKU_ID.match(sku_id):
        raise GalleryError(f"SKU id {sku_id!r} must match {SKU_ID.pattern} (and not be 'none')")
    photos = [Path(p) for p in photos]
    if not photos:
        raise GalleryError(f"no photo given for SKU {sku_id}")
    with _locked(root):
        current, removed = _current(root), _removed(root)
        category = _category(sku_id, category, current)
        minimum = params.train.sku.gallery_per_sku
        if sku_id not in set(current["sku_id"]) and len(photos) < minimum:
            raise GalleryError(f"a new SKU needs at least {minimum} photos (train.sku.gallery_per_sku); "
                               f"{sku_id} got {len(photos)}: nothing was changed")
        problems, shas = [], []
        owner = dict(zip(current["sha256"], current["sku_id"]))
        for photo in photos:
            sha, found = _photo_problems(photo, params, root)
            if sha is not None and sha in shas:
                found.append("is given twice")
            elif sha is not None and sha in owner:
                found.append(f"is already in the gallery (SKU {owner[sha]}, {PHOTOS}/{sha}.jpg)")
            problems += [f"{photo}: {p}" for p in found]
            shas.append(sha)
        if problems:
            raise GalleryError(f"{len(problems)} problem(s), nothing was changed: " + "; ".join(problems))
        rows = pd.DataFrame({"sku_id": sku_id, "category": category, "image": [f"{PHOTOS}/{s}.jpg" for s in shas],
                             "sha256": shas, "source": SOURCE_ENROLLED, "added": _now()})
        new = sku_id not in set(current["sku_id"])
        message = (f"gallery: add SKU {sku_id} ({category}, {len(rows)} photos)" if new
                   else f"gallery: add {len(rows)} photos to SKU {sku_id}")
        removed.pop(sku_id, None)
        result = _commit(root, pd.concat([current, rows], ignore_index=True), dict(zip(shas, photos)), removed,
                         message, push)
    return {**result, "sku_id": sku_id, "category": category, "added": len(rows), "new_sku": new}


def remove(root: str | Path | None, sku_id: str, *, push: bool = True) -> dict:
    """Drop ``sku_id`` and its photos; ``seed`` will not enrol it again (``add`` does)."""
    root = _root(root)
    with _locked(root):
        current = _current(root)
        if current.empty and not (root / GALLERY_DIR / MANIFEST).is_file():
            read_gallery(root)                                  # raises NoGallery, saying what to run
        gone = current["sku_id"] == sku_id
        if not gone.any():
            raise GalleryError(f"SKU {sku_id!r} is not in the gallery ({current['sku_id'].nunique()} SKUs enrolled; "
                               f"`reviewops gallery show` lists them): nothing was changed")
        removed = {**_removed(root), sku_id: _now()}
        message = f"gallery: remove SKU {sku_id} ({int(gone.sum())} photos)"
        result = _commit(root, current[~gone].reset_index(drop=True), {}, removed, message, push)
    return {**result, "sku_id": sku_id, "removed": int(gone.sum())}
