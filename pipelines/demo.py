"""`make demo`: the main job end to end on this machine, with the time of every stage.

For now (foundation): generate the demo batch, validate it with Great Expectations and version
it with DVC. Later stages (training, gate, serving, Airflow, monitoring) join here.
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


def run_demo(batch: str, profile: str, repo: Path | None = None) -> int:
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
    typer.secho("\nReviewOps demo done", bold=True)
    for name, seconds in timings.items():
        typer.echo(f"  {seconds:7.1f} s  {name}")
    typer.echo(f"  versioned data: {versioned} (dvc status, dvc pull; pointer {versioned}.dvc)")
    return 0
