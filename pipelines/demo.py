"""`make demo`: the main job end to end on this machine, with the time of every stage.

Generate the demo batch, validate it with Great Expectations, version it with DVC, then train and
evaluate every model family with ``dvc repro`` (unchanged families are not retrained). Later
stages (gate, serving, Airflow, monitoring) join here.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import typer

from .params import load_params


@contextmanager
def stage(name: str, timings: dict[str, float]):
    typer.secho(f"\n==> {name}", bold=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    typer.echo(f"    {name} took {timings[name]:.1f} s")


def _repro(repo: Path) -> int:
    """``dvc repro`` in ``repo`` with this environment's executables first on PATH (stage commands are ``reviewops``)."""
    import os
    import subprocess
    import sys

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(Path(bin_dir) / "dvc"), "repro"], cwd=repo, env=env).returncode


def _summary(repo: Path) -> list[str]:
    """One line per family from metrics/<family>.json: the figures the issue asks for."""
    from .evaluation import read_metrics
    from .families import FAMILIES

    def f(v) -> str:
        return "n/a" if v is None else format(v, ".3f")

    lines = []
    for family in FAMILIES:
        try:
            m = read_metrics(family, repo)
        except FileNotFoundError:
            continue
        t = m["test"]
        if family == "sku":
            line = (f"top-1 {f(t['top1_accuracy'])}, mAP {f(t['mAP'])}, recall@5 {f(t['recall_at_5'])}, "
                    f"mismatch-alarm recall {f(t['mismatch_alarm']['recall'])}, unknown-SKU alarm recall "
                    f"{f(t['unknown_sku_alarm_recall'])}, auto-pass {f(t['auto_pass_share'])}")
        elif family == "blur":
            line = (f"Spearman {f(t['model']['spearman'])} (Laplacian {f(t['laplacian_baseline']['spearman'])}), "
                    f"recall of blurred {f(t['model']['blurred']['recall'])}")
        elif family == "detector":
            line = (f"mAP50 {f(t['map50']['all'])}, sticker-missing recall {f(t['sticker_missing']['recall'])}, "
                    f"dirt recall {f(t['dirt']['recall'])}, centring accuracy {f(t['centring']['accuracy'])}")
        elif family == "prohibited":
            cats = t["categories"].values()
            low = lambda key: min((c[key] for c in cats if c[key] is not None), default=None)  # noqa: E731
            line = f"lowest recall {f(low('recall'))}, lowest precision {f(low('precision'))} over {len(cats)} categories"
        else:
            line = f"recall {f(t['manipulated']['recall'])}, precision {f(t['manipulated']['precision'])}"
        lines.append(f"  {family:<13}{line}  (trained in {m['train_seconds']:.0f} s)")
    return lines


def run_demo(batch: str, profile: str, repo: Path | None = None, train: bool = True) -> int:
    from .generate import generate_batch
    from .validate import format_outcome, validate_batch
    from .version import format_outcome as format_version, version_batch

    repo = (repo or Path.cwd()).resolve()
    params = load_params()
    prof = params.data.profiles[profile]
    incoming = repo / "data" / "incoming" / batch
    versioned = repo / "data" / "batches" / batch
    timings: dict[str, float] = {}
    if versioned.exists():
        typer.echo(f"{batch} is already versioned at {versioned}: nothing to do for the data stages")
    else:
        with stage(f"generate {prof.n} photos (seed {prof.seed}) into {incoming}", timings):
            if incoming.exists():
                typer.echo(f"    {incoming} exists: reusing it")
            else:
                generate_batch(incoming.parent, batch, prof.n, prof.seed, params, progress=True)
        with stage("validate with Great Expectations", timings):
            outcome = validate_batch(incoming, repo=repo, params=params)
            typer.echo(format_outcome(outcome))
        if not outcome.ok:
            typer.secho("demo stopped: the batch failed validation and was quarantined", fg=typer.colors.RED)
            return 1
        with stage("version with DVC (add, git commit, push)", timings):
            typer.echo(format_version(version_batch(incoming, repo=repo, params=params)))
    if train:
        with stage("train and evaluate every model family (dvc repro)", timings):
            code = _repro(repo)
        if code != 0:
            typer.secho("demo stopped: dvc repro failed (see above)", fg=typer.colors.RED)
            return code
    typer.secho("\nReviewOps demo done", bold=True)
    for name, seconds in timings.items():
        typer.echo(f"  {seconds:7.1f} s  {name}")
    typer.echo(f"  versioned data: {versioned} (dvc status, dvc pull; pointer {versioned}.dvc)")
    if train:
        typer.echo("  models: models/<family>/; metrics on the frozen test split (dvc metrics show):")
        for line in _summary(repo):
            typer.echo(line)
        typer.echo("  plots: dvc plots show  (writes dvc_plots/index.html)")
    return 0
