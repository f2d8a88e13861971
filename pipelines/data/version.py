"""Version a validated batch with DVC: ``reviewops version DIR/ID``.

The batch moves from ``data/incoming/ID`` (or any directory) to ``data/batches/ID``; its manifest
gains ``split`` (the first batch freezes the test split, recorded in ``data/test_split.json``) and
``phash``; ``dvc add`` tracks it, the pointer is committed to git when the project is a git work
tree, and ``dvc push`` sends the data to the default remote.

Transaction: every step up to the git commit is undone when a later one fails, so a failed call
leaves the batch where it was. A failed push comes after the commit: the batch is versioned, the
error says so, and calling again with the same batch pushes it. Versioning an id that is already in
``data/batches/`` changes nothing: with the same content (listing ids and SHA-256s), or with the
source gone (a retried task), it reports ``already_versioned`` and pushes again; with other content
it raises ``VersionError``.

git: ``dvc add`` writes ``/ID`` into ``data/batches/.gitignore``, committed with ``ID.dvc``, so each
commit ignores exactly the batches it tracks; no other .gitignore may ignore ``data/batches/`` itself.

Remote: ``storage``. A URL from the ``remote`` argument or ``$REVIEWOPS_DVC_REMOTE`` (a directory or
an ``s3://`` URL) is machine configuration and goes to ``.dvc/config.local`` (never committed, and
it overrides the project config). Without either, the project default is ``<repo>/.dvc-remote``,
written to ``.dvc/config`` as a relative path so that every checkout of the project can use it.

Concurrency: DVC and git hold one lock per work tree, so every mutation here runs under
``repo_lock`` (a file lock in ``.dvc/tmp``); other modules that run dvc in the work tree should too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.data.dataset import BATCHES_DIR, INCOMING_DIR, TEST_SPLIT_FILE, read_test_split
from pipelines.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from pipelines.locks import file_lock
from pipelines.params import Params, load_params
from pipelines.data.phash import phash_file
from pipelines.data.splits import SPLITS, assign_splits

REMOTE_NAME = "storage"
REMOTE_ENV = "REVIEWOPS_DVC_REMOTE"
DEFAULT_REMOTE_DIR = ".dvc-remote"
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DVC_INFRA = (".dvc/config", ".dvc/.gitignore", ".dvcignore")


class VersionError(RuntimeError):
    """Versioning refused or failed; the message says why and what was (not) changed."""


@dataclass(frozen=True)
class VersionOutcome:
    batch_id: str
    dest: Path
    n_rows: int
    splits: dict[str, int]
    first_batch: bool
    dvc_file: Path
    commit: str | None
    remote: str
    pushed: bool
    already_versioned: bool = False
    messages: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- subprocesses


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")  # pipelines never phone home from a task
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise VersionError(f"{what} failed (exit {proc.returncode}) in {cwd}:\n{detail}")
    return proc.stdout


def dvc(repo: Path, *args: str) -> str:
    """Run the DVC of this interpreter (never a dvc from PATH) in ``repo``."""
    return _run([sys.executable, "-m", "dvc", *args], Path(repo), "dvc " + " ".join(args[:2]))


def git(repo: Path, *args: str) -> str:
    return _run(["git", *args], Path(repo), "git " + args[0])


def git_toplevel(repo: Path) -> Path | None:
    """Top of the git work tree holding ``repo``, or None when it is not in one (or git is absent)."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


# --------------------------------------------------------------------------- locking


def repo_lock(repo: str | Path, timeout: float | None = None):
    """The process-wide lock around every DVC/git mutation of the work tree ``repo``."""
    repo = Path(repo).resolve()
    return file_lock(repo / ".dvc" / "tmp" / "reviewops.lock", timeout, "DVC/git work-tree lock", VersionError)


# --------------------------------------------------------------------------- DVC repo and remote


def _init_dvc(repo: Path) -> None:
    if (repo / ".dvc").is_dir():
        return
    key = hashlib.sha1(str(repo).encode()).hexdigest()[:16]
    # .dvc/ does not exist yet to hold the lock: serialise `dvc init` per path on this machine.
    lock = Path(tempfile.gettempdir()) / f"reviewops-dvc-init-{key}.lock"
    with file_lock(lock, None, "dvc init", VersionError):
        if (repo / ".dvc").is_dir():
            return
        top = git_toplevel(repo)
        flags = ["--no-scm"] if top is None else ([] if top == repo else ["--subdir"])
        dvc(repo, "init", "-q", *flags)
        lock.unlink(missing_ok=True)  # safe: whoever waits on it finds .dvc/ and returns


def _config(repo: Path, level: str) -> dict:
    from configobj import ConfigObj  # DVC's own config format

    path = repo / ".dvc" / ("config.local" if level == "local" else "config")
    return ConfigObj(str(path)) if path.exists() else {}


def _default_remote(repo: Path) -> tuple[str | None, str | None]:
    """(name, url) of the effective default remote: local config over project config."""
    local, project = _config(repo, "local"), _config(repo, "repo")
    name = local.get("core", {}).get("remote") or project.get("core", {}).get("remote")
    if not name:
        return None, None
    section = f'remote "{name}"'
    url = local.get(section, {}).get("url") or project.get(section, {}).get("url")
    return name, url


def _is_local(url: str) -> bool:
    return "://" not in url


def _absolute_url(repo: Path, url: str) -> str:
    """A relative local remote in a config file is relative to the file's directory (.dvc/)."""
    if _is_local(url) and not os.path.isabs(url):
        return str((repo / ".dvc" / url).resolve())
    return url


def _configure_remote(repo: Path, remote: str | None) -> str:
    url = remote or os.environ.get(REMOTE_ENV) or None
    if url:
        if _is_local(url):
            url = str(Path(url).expanduser().resolve())
            Path(url).mkdir(parents=True, exist_ok=True)
        name, current = _default_remote(repo)
        if name != REMOTE_NAME or current != url:
            dvc(repo, "remote", "add", "--local", "--default", "--force", REMOTE_NAME, url)
        return url
    name, current = _default_remote(repo)
    if name and current:
        return _absolute_url(repo, current)
    store = repo / DEFAULT_REMOTE_DIR
    store.mkdir(exist_ok=True)
    (store / ".gitignore").write_text("*\n")  # never committed, whatever the root .gitignore says
    dvc(repo, "remote", "add", "--default", "--force", REMOTE_NAME, DEFAULT_REMOTE_DIR)  # cwd-relative
    return str(store)


def ensure_dvc_repo(repo: str | Path | None = None, remote: str | None = None) -> str:
    """Make ``repo`` a DVC repo with a default remote; returns the remote's URL (absolute path if local)."""
    repo = Path(repo or Path.cwd()).resolve()
    _init_dvc(repo)
    with repo_lock(repo):
        return _configure_remote(repo, remote)


# --------------------------------------------------------------------------- versioning


def _params_for(repo: Path) -> Params:
    own = repo / "params.yaml"
    return load_params(own if own.exists() and not os.environ.get("REVIEWOPS_PARAMS") else None)


def resolve_batch_dir(batch: str | Path, repo: Path) -> Path:
    """A batch directory, or a bare batch id meaning ``data/incoming/ID``."""
    path = Path(batch)
    if not path.is_dir() and len(path.parts) == 1:
        return (repo / INCOMING_DIR / path).resolve()
    return path.resolve()


def _phashes(batch_dir: Path, images: pd.Series) -> list[str]:
    paths = [batch_dir / rel for rel in images]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # cv2 releases the GIL
        hashes = list(pool.map(phash_file, paths, chunksize=64))
    bad = [str(p.relative_to(batch_dir)) for p, h in zip(paths, hashes) if h is None]
    if bad:
        raise VersionError(f"{len(bad)} images of {batch_dir} do not decode (first: {bad[:3]}); "
                           f"validate the batch before versioning it")
    return hashes


def _split_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def _content(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["listing_id"], df["sha256"]))


def _check_batch(src: Path, batch_id: str, repo: Path) -> pd.DataFrame:
    if not src.is_dir():
        raise VersionError(f"no batch directory {src}")
    df = read_manifest(src)
    if len(df) == 0:
        raise VersionError(f"batch {batch_id} has no rows")
    wrong = sorted(set(df["batch"]) - {batch_id})
    if wrong:
        raise VersionError(f"manifest of {src} names batches {wrong[:3]}, not its directory name {batch_id!r}")
    if df["listing_id"].duplicated().any():
        raise VersionError(f"batch {batch_id} repeats listing ids: "
                           f"{df['listing_id'][df['listing_id'].duplicated()].head(3).tolist()}")
    missing = [rel for rel in df["image"] if not (src / rel).is_file()]
    if missing:
        raise VersionError(f"batch {batch_id}: {len(missing)} images of the manifest are missing "
                           f"(first: {missing[:3]})")
    frozen = read_test_split(repo)
    if frozen is not None:
        clash = sorted(set(df["listing_id"]) & set(frozen["listing_ids"]))
        if clash:
            raise VersionError(f"batch {batch_id} holds {len(clash)} listings of the frozen test split "
                               f"(first: {clash[:3]}); the test split never changes")
    return df


def _last_commit(repo: Path, path: Path, in_git: bool) -> str | None:
    if not in_git:
        return None
    sha = git(repo, "log", "-1", "--format=%H", "--", str(path)).strip()
    return sha or None


def _already_versioned(src: Path, dest: Path, batch_id: str, repo: Path, in_git: bool,
                       remote_url: str, push: bool) -> VersionOutcome:
    dvc_file = dest.parent / f"{batch_id}.dvc"
    if not dvc_file.exists():
        raise VersionError(f"{dest} exists but is not DVC-tracked (no {dvc_file.name}), probably left by an "
                           f"interrupted run: move it back to {INCOMING_DIR / batch_id} and version it again")
    done = read_manifest(dest)
    if src.is_dir() and src != dest and _content(read_manifest(src)) != _content(done):
        raise VersionError(f"batch {batch_id} is already versioned at {dest} with other content; nothing was "
                           f"changed. Give the new batch a new id")
    if push:
        dvc(repo, "push", str(dvc_file.relative_to(repo)))  # not -q: it silences the error too
    frozen = read_test_split(repo)
    return VersionOutcome(
        batch_id=batch_id, dest=dest, n_rows=len(done), splits=_split_counts(done),
        first_batch=bool(frozen and frozen["batch"] == batch_id), dvc_file=dvc_file,
        commit=_last_commit(repo, dvc_file.relative_to(repo), in_git), remote=remote_url, pushed=push,
        already_versioned=True,
        messages=[f"batch {batch_id} was already versioned" + (" with this content" if src.is_dir() else "")
                  + ": nothing changed" + ("; pushed again" if push else "")])


def _write_test_split(path: Path, batch_id: str, df: pd.DataFrame) -> None:
    test = df[df["split"] == "test"].sort_values("listing_id")
    record = {"batch": batch_id, "listing_ids": test["listing_id"].tolist(),
              "phash": test["phash"].tolist(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def version_batch(batch_dir: str | Path, *, repo: str | Path | None = None, params: Params | None = None,
                  remote: str | None = None, push: bool = True) -> VersionOutcome:
    """Version one validated batch (a directory, or an id in ``data/incoming/``) in the project ``repo``."""
    repo = Path(repo or Path.cwd()).resolve()
    params = params or _params_for(repo)
    src = resolve_batch_dir(batch_dir, repo)
    batch_id = src.name
    if not BATCH_ID.match(batch_id):
        raise VersionError(f"batch id {batch_id!r} must match {BATCH_ID.pattern}")
    batches = repo / BATCHES_DIR
    dest, dvc_file = batches / batch_id, batches / f"{batch_id}.dvc"
    rel_dvc = dvc_file.relative_to(repo)

    _init_dvc(repo)
    with repo_lock(repo):
        remote_url = _configure_remote(repo, remote)
        in_git = git_toplevel(repo) is not None
        if dest.exists():
            return _already_versioned(src, dest, batch_id, repo, in_git, remote_url, push)
        df = _check_batch(src, batch_id, repo)
        if in_git and subprocess.run(["git", "check-ignore", "-q", str(rel_dvc)], cwd=repo).returncode == 0:
            raise VersionError(f"{rel_dvc} would be git-ignored, so the version could not be committed: "
                               f"no .gitignore may ignore {BATCHES_DIR}/ itself (DVC ignores each batch's "
                               f"data in {BATCHES_DIR}/.gitignore)")
        first = not (repo / TEST_SPLIT_FILE).exists()
        df["split"] = assign_splits(df["listing_id"], params, first_batch=first).to_numpy()
        df["phash"] = _phashes(src, df["image"])

        commit = _commit_version(repo, src, dest, df, batch_id, first, in_git)
        outcome = VersionOutcome(batch_id=batch_id, dest=dest, n_rows=len(df), splits=_split_counts(df),
                                 first_batch=first, dvc_file=dvc_file, commit=commit, remote=remote_url,
                                 pushed=False)
        if push:
            try:
                dvc(repo, "push", str(rel_dvc))  # not -q: DVC's -q also silences why a push failed
            except VersionError as err:
                where = f" (commit {commit[:10]})" if commit else ""
                raise VersionError(f"batch {batch_id} is versioned locally{where} but the push to {remote_url} "
                                   f"failed; version it again to retry the push.\n{err}") from err
            outcome = replace(outcome, pushed=True)
        return outcome


def _commit_version(repo: Path, src: Path, dest: Path, df: pd.DataFrame, batch_id: str, first: bool,
                    in_git: bool) -> str | None:
    """Move, annotate, ``dvc add`` and commit; on any failure undo every step done so far."""
    batches = dest.parent
    dvc_file, ignore, test_split = batches / f"{batch_id}.dvc", batches / ".gitignore", repo / TEST_SPLIT_FILE
    ignore_before = ignore.read_bytes() if ignore.exists() else None
    manifest_before = (src / MANIFEST_NAME).read_bytes()
    created_batches = not batches.exists()
    undo: list = []

    def move_back():
        (dest / MANIFEST_NAME).write_bytes(manifest_before)
        shutil.move(str(dest), str(src))

    def restore_ignore():
        if ignore_before is None:
            ignore.unlink(missing_ok=True)
        else:
            ignore.write_bytes(ignore_before)

    try:
        batches.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        undo.append(move_back)
        write_manifest(df, dest)
        if first:
            undo.append(lambda: test_split.unlink(missing_ok=True))
            _write_test_split(test_split, batch_id, df)
        undo += [lambda: dvc_file.unlink(missing_ok=True), restore_ignore]
        dvc(repo, "add", "-q", str(dest.relative_to(repo)))
        if not in_git:
            return None
        ours = [p for p in (dvc_file, ignore, test_split if first else None) if p is not None and p.exists()]
        ours = [str(p.relative_to(repo)) for p in ours]
        # DVC's own files are committed with the first version (and any later change to them).
        paths = ours + [f for f in DVC_INFRA if (repo / f).exists()]
        undo.append(lambda: subprocess.run(["git", "reset", "-q", "--", *ours], cwd=repo, capture_output=True))
        git(repo, "add", "--", *paths)
        git(repo, "commit", "-q", "-m", f"data: version batch {batch_id} ({len(df)} photos)", "--", *paths)
        return git(repo, "rev-parse", "HEAD").strip()
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # keep undoing; the original error is what the caller needs
                pass
        if created_batches and batches.is_dir() and not any(batches.iterdir()):
            batches.rmdir()
        raise


def checkout_version(rev: str, repo: str | Path | None = None) -> None:
    """Put the workspace at the data version of git revision ``rev``: git checkout, then dvc checkout
    (which also removes batches that ``rev`` does not track; their data stays in the DVC cache)."""
    repo = Path(repo or Path.cwd()).resolve()
    with repo_lock(repo):
        git(repo, "checkout", "-q", rev)
        dvc(repo, "checkout", "-q")


def format_outcome(o: VersionOutcome) -> str:
    splits = ", ".join(f"{s} {n}" for s, n in o.splits.items())
    head = (f"batch {o.batch_id} already versioned at {o.dest} ({o.n_rows} photos: {splits}); nothing changed"
            if o.already_versioned else f"batch {o.batch_id} versioned: {o.n_rows} photos -> {o.dest} ({splits})")
    lines = [head]
    if o.first_batch:
        lines.append(f"  first batch: froze the test split ({o.splits['test']} listings) in {TEST_SPLIT_FILE}")
    lines.append(f"  pointer {o.dvc_file.name}" + (f", git commit {o.commit[:10]}" if o.commit else ", not in git"))
    lines.append(f"  {'pushed to' if o.pushed else 'not pushed; remote'} {o.remote}")
    return "\n".join(lines)
