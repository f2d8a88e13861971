"""The `reviewops` command: one sub-command per stage, each a thin wrapper over one function."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ReviewOps: train, gate, serve and watch the listing-photo review models.")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def generate(
    n: Optional[int] = typer.Option(None, help="number of photos (default: the profile's n)"),
    seed: Optional[int] = typer.Option(None, help="generator seed (default: the profile's seed)"),
    batch: str = typer.Option(..., help="batch id: the directory name under --out"),
    out: Path = typer.Option(Path("data/incoming"), help="directory that receives the batch"),
    shift: Optional[str] = typer.Option(None, help="drift knobs, e.g. blur_rate=0.6,lighting=dark,new_sku_rate=0.3"),
    profile: str = typer.Option("demo", help="params.yaml data profile giving default n and seed"),
    workers: Optional[int] = typer.Option(None, help="processes (default: all cores)"),
) -> None:
    """Render a batch of labelled listing photos: OUT/BATCH/images/*.jpg and manifest.parquet."""
    from .generate import generate_batch, parse_shift
    from .params import load_params

    params = load_params()
    if profile not in params.data.profiles:
        _fail(f"unknown profile {profile!r}; params.yaml has {sorted(params.data.profiles)}", 2)
    prof = params.data.profiles[profile]
    count = prof.n if n is None else n
    start = time.perf_counter()
    try:
        dest = generate_batch(out, batch, count, prof.seed if seed is None else seed, params,
                              parse_shift(shift), workers=workers, progress=True)
    except (ValueError, FileExistsError) as exc:
        _fail(str(exc), 2)
    took = time.perf_counter() - start
    typer.echo(f"wrote {count} photos to {dest} in {took:.1f} s ({count / took:.0f} photos/s)")


@app.command()
def validate(batch_dir: Path = typer.Argument(..., help="the batch directory, e.g. data/incoming/b1"),
             quarantine: bool = typer.Option(True, help="move a failing batch to data/quarantine/")) -> None:
    """Validate a batch with the Great Expectations suite; a failing batch is quarantined (exit 1)."""
    from .validate import format_outcome, validate_batch

    if not batch_dir.is_dir():
        _fail(f"{batch_dir} is not a directory", 2)
    outcome = validate_batch(batch_dir, quarantine=quarantine)
    typer.echo(format_outcome(outcome))
    raise typer.Exit(0 if outcome.ok else 1)


@app.command()
def version(batch_dir: Path = typer.Argument(..., help="a validated batch directory, e.g. data/incoming/b1")) -> None:
    """Version a validated batch: move it to data/batches/, dvc add, git commit, dvc push."""
    from .version import VersionError, format_outcome, version_batch

    if not batch_dir.is_dir():
        _fail(f"{batch_dir} is not a directory", 2)
    try:
        outcome = version_batch(batch_dir)
    except (VersionError, ValueError, FileExistsError) as exc:
        _fail(str(exc))
    typer.echo(format_outcome(outcome))


@app.command("contact-sheet")
def contact_sheet(batch_dir: Path = typer.Argument(..., help="a batch directory"),
                  out: Path = typer.Option(Path("docs/contact_sheet.png"), help="PNG to write"),
                  count: int = typer.Option(64, help="photos on the sheet")) -> None:
    """Draw photos of a batch with their labels (boxes, SKU, blur score, defects) into one PNG."""
    from .contact_sheet import write_contact_sheet

    try:
        typer.echo(f"wrote {write_contact_sheet(batch_dir, out, count)}")
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)


def _family_or_fail(name: str) -> None:
    from .families import FAMILIES

    if name not in FAMILIES:
        _fail(f"unknown model family {name!r}: expected one of {', '.join(FAMILIES)}", 2)


@app.command()
def train(family: str = typer.Argument(..., help="sku | blur | detector | prohibited | manipulation"),
          category: Optional[list[str]] = typer.Option(None, help="prohibited only: train just these categories")) -> None:
    """Train one model family on the versioned data; writes models/FAMILY/ (a DVC stage runs this)."""
    from .families import family_module, train as train_family
    from .families.common import NoData

    _family_or_fail(family)
    if category and family != "prohibited":
        _fail("--category applies to the prohibited family only", 2)
    start = time.perf_counter()
    try:
        if category:
            from .params import load_params

            family_module("prohibited").train(Path.cwd(), load_params(), list(category))
        else:
            train_family(family)
    except (NoData, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(f"trained {family}{' ' + ','.join(category) if category else ''} in {time.perf_counter() - start:.1f} s "
               f"-> models/{family}/")


@app.command()
def evaluate(family: str = typer.Argument(..., help="sku | blur | detector | prohibited | manipulation")) -> None:
    """Choose thresholds on validation, measure on the frozen test split: metrics/FAMILY.json and plots/FAMILY/."""
    import json

    from .families import evaluate as evaluate_family
    from .families.common import NoData

    _family_or_fail(family)
    try:
        metrics = evaluate_family(family)
    except (NoData, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(json.dumps({"test": metrics.get("test"), "thresholds": metrics.get("thresholds")}, indent=1))
    typer.echo(f"wrote metrics/{family}.json and plots/{family}/")


@app.command()
def demo(batch: str = typer.Option("demo-b1", help="batch id of the demo batch"),
         profile: str = typer.Option("demo", help="data profile from params.yaml"),
         train: bool = typer.Option(True, help="train and evaluate every family (dvc repro) after versioning")) -> None:
    """The main job, end to end: generate, validate and version a demo batch, then train every model family."""
    from .demo import run_demo

    sys.exit(run_demo(batch, profile, train=train))


if __name__ == "__main__":
    app()
