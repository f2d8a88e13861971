"""The SKU gallery (pipelines/data/gallery.py): seed, add, remove, show, each one DVC + git transaction."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import sh

BIN = Path(sys.executable).parent


def dvc_clean(repo: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True).stdout
    assert "up to date" in out, out


def state(repo: Path) -> tuple:
    """What a refused change must leave as it was: HEAD, the pointer, the manifest and the photos."""
    head = sh(repo, "git", "rev-parse", "HEAD") if (repo / ".git").exists() else None
    photos = sorted(p.name for p in (repo / "gallery" / "photos").iterdir())
    return (head, (repo / "gallery.dvc").read_bytes(), (repo / "gallery" / "manifest.parquet").read_bytes(), photos)


def catalogue_train(repo: Path):
    from pipelines.data.dataset import split_frame, versioned_manifest

    train = split_frame(versioned_manifest(repo), "train")
    return train[(train["sku_id"] != "none") & ~train["new_sku"].astype(bool)]


def spare_photos(repo: Path, n: int) -> list[Path]:
    """Validation photos that are in no gallery (validated, and not near a frozen test photo)."""
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.data.gallery import read_gallery

    val = split_frame(versioned_manifest(repo), "val")
    val = val[~val["sha256"].isin(set(read_gallery(repo)["sha256"]))].sort_values("listing_id")
    assert len(val) >= n
    return [Path(p) for p in val["path"].head(n)]


@pytest.fixture
def repo(copy_project):
    return copy_project()


@pytest.fixture
def params(repo):
    from pipelines.params import load_params

    return load_params(repo / "params.yaml")


def test_seed_enrols_every_catalogue_sku_of_the_train_split_and_commits_the_pointer(repo, params):
    from pipelines.data.gallery import pick, read_gallery, seed
    from pipelines.train.families.sku import holdout_skus

    # the tiny project was seeded by tests/conftest.py: start again without a gallery
    sh(repo, "git", "rm", "-q", "gallery.dvc")
    sh(repo, "git", "commit", "-q", "-m", "no gallery")
    shutil.rmtree(repo / "gallery")

    result = seed(repo, params)

    per, cutoff = params.train.sku.gallery_per_sku, params.train.sku.gallery_blur_cutoff
    train = catalogue_train(repo)
    g = read_gallery(repo)
    assert result["changed"] and result["n_skus"] == train["sku_id"].nunique() == g["sku_id"].nunique()
    available = train["sku_id"].value_counts()
    assert g["sku_id"].value_counts().sort_index().to_dict() == {s: min(per, int(n)) for s, n in sorted(available.items())}
    assert set(holdout_skus(train["sku_id"], params)) & set(available.index) <= set(g["sku_id"])  # never trained on, enrolled
    assert g["sha256"].is_unique and set(g["sha256"]) <= set(train["sha256"])
    assert sorted(g["sha256"]) == sorted(pick(train, available.index, per, cutoff)["sha256"])    # defect-free first
    for row in g.itertuples():
        assert row.image == f"photos/{row.sha256}.jpg" and row.source.startswith("data:tiny-b1/")
        assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256
    assert sh(repo, "git", "log", "-1", "--format=%s").startswith("gallery: seed ")
    assert "gallery.dvc" in sh(repo, "git", "ls-files") and sh(repo, "git", "status", "--porcelain") == ""
    assert result["commit"] == sh(repo, "git", "rev-parse", "HEAD") and result["pushed"]
    dvc_clean(repo)

    head = sh(repo, "git", "rev-parse", "HEAD")
    again = seed(repo, params)
    assert not again["changed"] and again["commit"] is None and sh(repo, "git", "rev-parse", "HEAD") == head


def test_add_refuses_bad_photos_and_too_few_photos_and_changes_nothing(repo, params, tmp_path):
    from pipelines.data.gallery import GalleryError, add, read_gallery

    good = spare_photos(repo, 3)
    truncated, small = tmp_path / "truncated.jpg", tmp_path / "small.jpg"
    truncated.write_bytes(good[0].read_bytes()[:2000])
    Image.new("RGB", (10, 10), (200, 30, 30)).save(small, "JPEG")
    before = state(repo)

    with pytest.raises(GalleryError, match="truncated.jpg: image file does not decode") as err:
        add(repo, params, "acme-x1", [truncated, *good[1:]], "phone")
    assert "\n" not in str(err.value)
    with pytest.raises(GalleryError, match=r"small.jpg: is 10x10 px; each side must be within"):
        add(repo, params, "acme-x1", [small, *good[1:]], "phone")
    with pytest.raises(GalleryError, match="a new SKU needs at least 3 photos"):
        add(repo, params, "acme-x1", good[:2], "phone")
    enrolled = read_gallery(repo).iloc[0]
    with pytest.raises(GalleryError, match=f"is already in the gallery \\(SKU {enrolled.sku_id}"):
        add(repo, params, "acme-x1", [*good[:2], Path(enrolled.path)], "phone")
    with pytest.raises(GalleryError, match="is given twice"):
        add(repo, params, "acme-x1", [good[0], good[0], good[1]], "phone")
    with pytest.raises(GalleryError, match="not in the catalogue: give its category"):
        add(repo, params, "acme-x1", good)
    assert state(repo) == before
    dvc_clean(repo)

    done = add(repo, params, "acme-x1", good, "phone")
    g = read_gallery(repo)
    rows = g[g["sku_id"] == "acme-x1"]
    assert done["changed"] and done["new_sku"] and len(rows) == 3 and set(rows["category"]) == {"phone"}
    assert set(rows["source"]) == {"enrolled"} and all(Path(p).is_file() for p in rows["path"])
    assert sh(repo, "git", "log", "-1", "--format=%s") == "gallery: add SKU acme-x1 (phone, 3 photos)"
    assert sh(repo, "git", "status", "--porcelain") == ""
    dvc_clean(repo)


def test_a_test_photo_never_enters_the_gallery(repo, params):
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.data.gallery import GalleryError, add

    test = Path(split_frame(versioned_manifest(repo), "test")["path"].iloc[0])
    before = state(repo)
    with pytest.raises(GalleryError, match="near-duplicates frozen test photo"):
        add(repo, params, "acme-x1", [test, *spare_photos(repo, 2)], "phone")
    assert state(repo) == before


def test_remove_and_show_and_seed_leaves_a_removed_sku_out(repo, params):
    from pipelines.data.gallery import GalleryError, NoGallery, read_gallery, remove, seed, show

    info = show(repo)
    sku = sorted(info["skus"])[0]
    assert info["n_photos"] == sum(v["photos"] for v in info["skus"].values()) == len(read_gallery(repo))
    assert info["version"] and info["last_commit"]["subject"].startswith("gallery: seed")

    before = state(repo)
    with pytest.raises(GalleryError, match="'acme-none' is not in the gallery"):
        remove(repo, "acme-none")
    assert state(repo) == before

    photos = info["skus"][sku]["photos"]
    done = remove(repo, sku)
    after = show(repo)
    assert done["removed"] == photos and sku not in after["skus"] and after["removed"] == [sku]
    assert after["n_photos"] == info["n_photos"] - photos and after["version"] != info["version"]
    assert len(list((repo / "gallery" / "photos").iterdir())) == after["n_photos"]
    assert sh(repo, "git", "log", "-1", "--format=%s") == f"gallery: remove SKU {sku} ({photos} photos)"
    dvc_clean(repo)
    assert not seed(repo, params)["changed"]           # removed by hand: the seed does not bring it back

    shutil.rmtree(repo / "gallery")                    # the pointer is there, the data is not
    with pytest.raises(NoGallery, match="dvc pull gallery.dvc"):
        read_gallery(repo)


def test_the_cli_prints_one_line_errors_and_exits_2(repo, tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "small.jpg", "JPEG")
    env = {k: v for k, v in os.environ.items() if k != "REVIEWOPS_PARAMS"}
    run = lambda *args: subprocess.run([str(BIN / "reviewops"), "gallery", *args], cwd=repo, capture_output=True,  # noqa: E731
                                       text=True, env=env)
    shown = run("show")
    assert shown.returncode == 0 and shown.stdout.startswith("gallery ") and " SKUs, " in shown.stdout
    for args in (["remove", "acme-none"], ["add", "acme-x1", str(tmp_path / "small.jpg"), "--category", "phone"],
                 ["add", "acme-x1", str(tmp_path / "small.jpg"), str(tmp_path / "small.jpg"), "--category", "toaster"]):
        done = run(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


def test_a_project_outside_git_gets_a_gallery_too(tmp_path, tiny_project):
    from pipelines.data.gallery import add, read_gallery, seed, show
    from pipelines.params import load_params

    repo = tmp_path / "nogit"
    shutil.copytree(tiny_project, repo, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.no_scm", "true"], cwd=repo, check=True)
    (repo / "gallery.dvc").unlink()
    shutil.rmtree(repo / "gallery")
    params = load_params(repo / "params.yaml")

    result = seed(repo, params)
    assert result["changed"] and result["commit"] is None and len(read_gallery(repo)) == result["n_photos"]
    added = add(repo, params, "acme-x1", spare_photos(repo, 3), "phone")
    assert added["commit"] is None and show(repo)["skus"]["acme-x1"]["photos"] == 3
    dvc_clean(repo)
