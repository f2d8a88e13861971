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
    from pipelines.data.generate import generate_batch, parse_shift
    from pipelines.params import load_params

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
    from pipelines.data.validate import format_outcome, validate_batch

    if not batch_dir.is_dir():
        _fail(f"{batch_dir} is not a directory", 2)
    outcome = validate_batch(batch_dir, quarantine=quarantine)
    typer.echo(format_outcome(outcome))
    raise typer.Exit(0 if outcome.ok else 1)


@app.command()
def version(batch_dir: Path = typer.Argument(..., help="a validated batch directory, e.g. data/incoming/b1")) -> None:
    """Version a validated batch: move it to data/batches/, dvc add, git commit, dvc push; then enrol the
    catalogue SKUs the gallery lacks (as the ingest DAG's version task does)."""
    from pipelines.data.version import VersionError, format_outcome, version_batch

    if not batch_dir.is_dir():
        _fail(f"{batch_dir} is not a directory", 2)
    try:
        outcome = version_batch(batch_dir)
    except (VersionError, ValueError, FileExistsError) as exc:
        _fail(str(exc))
    typer.echo(format_outcome(outcome))
    gallery_seed()


@app.command("contact-sheet")
def contact_sheet(batch_dir: Path = typer.Argument(..., help="a batch directory"),
                  out: Path = typer.Option(Path("docs/contact_sheet.png"), help="PNG to write"),
                  count: int = typer.Option(64, help="photos on the sheet"),
                  borderline: bool = typer.Option(False, help="the drawn dirt and edits nearest the visibility rule "
                                                  "(labels.visibility), both sides, with the rule's inputs")) -> None:
    """Draw photos of a batch with their labels (boxes, SKU, blur score, defects) into one PNG."""
    from pipelines.data.contact_sheet import write_contact_sheet

    try:
        typer.echo(f"wrote {write_contact_sheet(batch_dir, out, count, borderline=borderline)}")
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)


@app.command("style-sheet")
def style_sheet(out: Path = typer.Option(Path("docs/product_styles.png"), help="PNG to write"),
                columns: int = typer.Option(8, min=1, max=16, help="photos per row")) -> None:
    """Generated products in each product style beside crops of the real photographs, in one PNG."""
    from pipelines.data.contact_sheet import write_style_sheet

    try:
        typer.echo(f"wrote {write_style_sheet(out, columns=columns)}")
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)


def _family_or_fail(name: str) -> None:
    from pipelines.train.families import get

    try:
        get(name)
    except ValueError as exc:
        _fail(str(exc), 2)


@app.command()
def train(family: str = typer.Argument(..., help="sku | blur | detector | prohibited | manipulation"),
          category: Optional[list[str]] = typer.Option(None, help="prohibited only: train just these categories"),
          neck: bool = typer.Option(False, "--neck", help="prohibited only: train just the neck the categories "
                                                          "share (then every category: dvc repro)")) -> None:
    """Train one model family on the versioned data; writes models/FAMILY/ (a DVC stage runs this)."""
    from pipelines.train.families import family_module, train as train_family
    from pipelines.train.families.common import NoData

    _family_or_fail(family)
    if (category or neck) and family != "prohibited":
        _fail(f"{'--category' if category else '--neck'} applies to the prohibited family only", 2)
    if category and neck:
        _fail("--neck trains the shared neck, --category a category's head: one at a time", 2)
    start = time.perf_counter()
    try:
        if category or neck:
            from pipelines.params import load_params

            module = family_module("prohibited")
            if neck:
                module.train_neck(Path.cwd(), load_params())
            else:
                module.train(Path.cwd(), load_params(), list(category))
        else:
            train_family(family)
    except (NoData, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    what = " " + ",".join(category) if category else " neck" if neck else ""
    typer.echo(f"trained {family}{what} in {time.perf_counter() - start:.1f} s -> models/{family}/")


@app.command()
def evaluate(family: str = typer.Argument(..., help="sku | blur | detector | prohibited | manipulation")) -> None:
    """Choose thresholds on validation, measure on the frozen test split: metrics/FAMILY.json and plots/FAMILY/."""
    import json

    from pipelines.train.families import evaluate as evaluate_family
    from pipelines.train.families.common import NoData

    _family_or_fail(family)
    try:
        metrics = evaluate_family(family)
    except (NoData, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(json.dumps({"test": metrics.get("test"), "thresholds": metrics.get("thresholds")}, indent=1))
    typer.echo(f"wrote metrics/{family}.json and plots/{family}/")


@app.command()
def reviewer() -> None:
    """The whole reviewer (every candidate, the one decision rule) on validation and test: metrics/reviewer.json."""
    from pipelines.params import load_params
    from pipelines.release.reviewer import evaluate_reviewer, summary
    from pipelines.train.families.common import NoData

    try:
        metrics = evaluate_reviewer(Path.cwd(), load_params(Path.cwd() / "params.yaml"), progress=True)
    except (NoData, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(summary(metrics))
    typer.echo("wrote metrics/reviewer.json and models/reviewer/scores.parquet")


@app.command("real-photos")
def real_photos() -> None:
    """The candidates (the reviewer stage's bundles) on real photos nothing trained on: metrics/real_photos.json."""
    from pipelines.data.real_photos import MissingPhoto
    from pipelines.params import load_params
    from pipelines.release.real_photos import evaluate_real_photos, summary

    try:
        metrics = evaluate_real_photos(Path.cwd(), load_params(Path.cwd() / "params.yaml"))
    except (MissingPhoto, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(summary(metrics))
    typer.echo("wrote metrics/real_photos.json and plots/real_photos/")


@app.command()
def demo(batch: str = typer.Option("demo-b1", help="batch id of the demo batch"),
         profile: str = typer.Option("demo", help="data profile from params.yaml"),
         train: bool = typer.Option(True, help="train and evaluate every family (dvc repro) after versioning")) -> None:
    """Generate, validate and version a demo batch, then train and evaluate every family (`make demo` runs more)."""
    from pipelines.app.demo import run_demo

    sys.exit(run_demo(batch, profile, train=train))


# --- gate, registry, build, deploy -----------------------------------------------------------------

def _store() -> Path:
    """The project's BentoML home (unless BENTOML_HOME is set): before anything imports bentoml."""
    from pipelines.release.registry import use_store

    return use_store(Path.cwd())


@app.command()
def gate(families: Optional[list[str]] = typer.Argument(None, help="families to judge (default: all five)")) -> None:
    """Promote each family's candidate only if it meets every recall floor and does not regress production.

    Writes reports/gate/FAMILY.json and .md; exits 1 when any candidate is refused (production untouched).
    """
    _store()
    from pipelines.train.families import FAMILIES
    from pipelines.release.gate import gate_family
    from pipelines.params import load_params

    names = list(families or FAMILIES)
    for name in names:
        _family_or_fail(name)
    params, refused, promoted = load_params(), [], False
    for name in names:
        try:
            result = gate_family(name, Path.cwd(), params)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            _fail(f"{name}: cannot judge the candidate: {exc}", 2)
        colour = {"promoted": typer.colors.GREEN, "unchanged": None, "refused": typer.colors.RED}[result.verdict]
        typer.secho(f"{name:13s} {result.verdict.upper():9s} {result.production_after or '-'}", fg=colour)
        for reason in result.reasons:
            typer.echo(f"    {reason}")
        if not result.passed:
            refused.append(name)
        promoted = promoted or result.verdict == "promoted"
    typer.echo("gate reports: reports/gate/<family>.md")
    if promoted:
        typer.echo("promoted: store the new drift reference with `reviewops reference` (the retrain DAG does)")
    if refused:
        _fail(f"refused: {', '.join(refused)} (production unchanged for them)", 1)


@app.command()
def rollback(family: str = typer.Argument(..., help="the family whose production pointer moves back"),
             to: Optional[str] = typer.Option(None, "--to", help="a tag or version (default: the previous model)")) -> None:
    """Move a family's production pointer back (history is kept); rebuild and deploy to serve it."""
    _store()
    from pipelines.release.registry import RegistryError, rollback as move_back

    _family_or_fail(family)
    try:
        entry = move_back(family, to)
    except RegistryError as exc:
        _fail(str(exc), 2)
    typer.echo(f"{family}: production {entry['from']} -> {entry['to']} (run reviewops build && reviewops deploy)")


@app.command()
def models() -> None:
    """The production model of every family and its history."""
    _store()
    import json

    from pipelines.release.registry import history, model_info, production

    for family, tag in sorted(production().items()):
        meta = model_info(tag)["metadata"]
        typer.echo(f"{family:13s} {tag}  registered {meta.get('registered_at')}  git {str(meta.get('git_revision'))[:10]}"
                   f"  thresholds {json.dumps(meta.get('thresholds'))}")
    for entry in history()[-10:]:
        typer.echo(f"  {entry['time']} {entry['action']:8s} {entry['family']:13s} {entry['from']} -> {entry['to']}")


@app.command()
def build() -> None:
    """`bentoml build` of the reviewer with every family's production model and a recorded smoke set."""
    _store()
    from pipelines.release.build import BuildError, build as build_bento
    from pipelines.params import load_params

    start = time.perf_counter()
    try:
        record = build_bento(Path.cwd(), load_params())
    except BuildError as exc:
        _fail(str(exc), 2)
    typer.echo(f"built {record['bento']} in {time.perf_counter() - start:.1f} s with {record['golden_photos']} golden "
               f"photos {record['golden_decisions']}")


@app.command()
def deploy(bento: Optional[str] = typer.Option(None, help="the Bento tag (default: the newest reviewops-reviewer)"),
           port: Optional[int] = typer.Option(None, help="serving port (default: serving.port of params.yaml)"),
           ready_timeout: float = typer.Option(300.0, help="seconds to wait for the new instance's /readyz")) -> None:
    """Blue/green on loopback: start the new Bento, wait until ready, replay the smoke set, switch, stop the old.

    If anything fails the old instance keeps serving and this exits 1.
    """
    home = _store()
    from pipelines.release.build import newest_bento
    from pipelines.deploy.bluegreen import DeployError, deploy as run_deploy
    from pipelines.params import load_params

    params = load_params()
    root = Path.cwd().resolve()
    tag = bento or newest_bento()
    if tag is None:
        _fail("no reviewops-reviewer Bento: run reviewops build first", 2)
    env = {"BENTOML_HOME": str(home), "REVIEWOPS_ROOT": str(root)}
    try:
        result = run_deploy(tag, state_dir=root / ".reviewops" / "deploy", port=port or params.serving.port,
                            ready_timeout=ready_timeout, env=env)
    except DeployError as exc:
        _fail(f"deploy of {tag} failed, the previous instance keeps serving: {exc}", 1)
    typer.echo(result.get("message") or f"deployed {tag}")


# --- the SKU gallery: enrol, remove, show, seed, deploy (no retraining) --------------------------------------

gallery_app = typer.Typer(no_args_is_help=True, help="The SKU gallery (gallery/, DVC): enrol SKUs, deploy without retraining.")
app.add_typer(gallery_app, name="gallery")


def _gallery_errors():
    from pipelines.data.gallery import GalleryError, NoGallery
    from pipelines.data.version import VersionError

    return GalleryError, NoGallery, VersionError, FileNotFoundError


def _gallery_outcome(result: dict) -> None:
    where = f" (commit {result['commit'][:10]})" if result.get("commit") else ""
    typer.echo(f"{result['message']}{where}" if result["changed"] else f"{result['message']}: nothing changed")
    typer.echo(f"gallery {result['version']}: {result['n_skus']} SKUs, {result['n_photos']} photos"
               + ("; pushed" if result.get("pushed") else "")
               + ("; serve it with `reviewops gallery deploy`" if result["changed"] else ""))


@gallery_app.command("add")
def gallery_add(sku: str = typer.Argument(..., help="the SKU id, e.g. nova-11-red"),
                photos: list[Path] = typer.Argument(..., help="JPEG photos of it (at least train.sku.gallery_per_sku for a new SKU)"),
                category: Optional[str] = typer.Option(None, help="phone | tablet | laptop | headphones "
                                                                  "(default: the catalogue's, or the enrolled one)")) -> None:
    """Enrol a SKU (or add photos to one): photos validated like a batch's, then dvc add + git commit."""
    from pipelines.data.gallery import add
    from pipelines.params import load_params

    try:
        result = add(Path.cwd(), load_params(), sku, list(photos), category)
    except _gallery_errors() as exc:
        _fail(str(exc), 2)
    _gallery_outcome(result)


@gallery_app.command("remove")
def gallery_remove(sku: str = typer.Argument(..., help="the SKU id to drop with its photos")) -> None:
    """Remove a SKU and its photos from the gallery (seed will not enrol it again; add does)."""
    from pipelines.data.gallery import remove

    try:
        result = remove(Path.cwd(), sku)
    except _gallery_errors() as exc:
        _fail(str(exc), 2)
    _gallery_outcome(result)


@gallery_app.command("show")
def gallery_show() -> None:
    """The gallery's version, last change, and every SKU with its category and photo count."""
    from pipelines.data.gallery import format_show, show
    from pipelines.params import load_params

    try:
        info = show(Path.cwd())
    except _gallery_errors() as exc:
        _fail(str(exc), 2)
    typer.echo(format_show(info, load_params().train.sku.gallery_per_sku))


@gallery_app.command("seed")
def gallery_seed() -> None:
    """Enrol every catalogue SKU of the versioned train split (train.sku.gallery_per_sku photos, sharp first)."""
    from pipelines.data.gallery import seed
    from pipelines.params import load_params

    try:
        result = seed(Path.cwd(), load_params())
    except _gallery_errors() as exc:
        _fail(str(exc), 2)
    _gallery_outcome(result)


@gallery_app.command("deploy")
def gallery_deploy(port: Optional[int] = typer.Option(None, help="serving port (default: serving.port of params.yaml)"),
                   ready_timeout: float = typer.Option(300.0, help="seconds to wait for the new instance's /readyz")) -> None:
    """Embed the gallery with the production SKU model, register + promote it, build, deploy blue/green."""
    _store()
    from pipelines.data.gallery import GalleryError, NoGallery
    from pipelines.deploy.bluegreen import DeployError
    from pipelines.params import load_params
    from pipelines.release.build import BuildError
    from pipelines.release.gallery import GalleryDeployError, deploy_gallery
    from pipelines.release.registry import RegistryError

    try:
        result = deploy_gallery(Path.cwd(), load_params(), port, ready_timeout=ready_timeout)
    except (GalleryError, NoGallery, GalleryDeployError, RegistryError, BuildError) as exc:
        _fail(str(exc), 2)
    except DeployError as exc:
        _fail(f"gallery deploy failed, the previous instance keeps serving: {exc}", 1)
    typer.echo(f"gallery {result['version']} ({result['skus']} SKUs, {result['photos']} photos) served by "
               f"{result['tag']} in {result['bento']}: {result['deploy'].get('message', '')}")
    typer.echo(f"took {result['seconds']:.1f} s")


# --- the decision policy: show it, move one check's operating point (no retraining) ---------------------------

policy_app = typer.Typer(no_args_is_help=True, help="The decision policy (every check's threshold): show it, move one check.")
app.add_typer(policy_app, name="policy")


@policy_app.command("show")
def policy_show(as_json: bool = typer.Option(False, "--json", help="the policy as JSON")) -> None:
    """The production policy: every check's threshold, where it came from, the policy_version, whether it is served."""
    _store()
    import json

    from pipelines.release.policy import PolicyError, current, format_current
    from pipelines.release.registry import RegistryError

    try:
        info = current(Path.cwd())
    except (PolicyError, RegistryError) as exc:
        _fail(str(exc), 2)
    typer.echo(json.dumps(info, indent=1) if as_json else format_current(info))


@policy_app.command("set")
def policy_set(check: str = typer.Argument(..., help="blur | sticker_missing | dirt | manipulation | prohibited:<category> "
                                                     "| sku (the similarity) | sku_margin"),
               threshold: Optional[float] = typer.Option(None, "--threshold", help="the new threshold"),
               recall: Optional[float] = typer.Option(None, "--recall", help="a photo-recall target: the threshold "
                                                      "reaching it on validation is chosen"),
               reason: str = typer.Option("", "--reason", help="why (kept in the registry and shown by policy show)"),
               dry_run: bool = typer.Option(False, "--dry-run", help="print the effect and write its report only"),
               force: bool = typer.Option(False, "--force", help="deploy even below the check's gate floor on test"),
               port: Optional[int] = typer.Option(None, help="serving port (default: serving.port of params.yaml)"),
               ready_timeout: float = typer.Option(300.0, help="seconds to wait for the new instance's /readyz")) -> None:
    """Move one check's threshold: its effect on val/test/live mix (reports/policy/), then register + promote the
    production bundle with it, build, deploy blue/green. No retraining."""
    _store()
    from pipelines.deploy.bluegreen import DeployError
    from pipelines.params import load_params
    from pipelines.release.build import BuildError
    from pipelines.release.policy import PolicyError, context, deploy_policy, format_proposal, propose, write_effect_report
    from pipelines.release.registry import RegistryError

    start = time.perf_counter()
    if (threshold is None) == (recall is None):
        _fail("give one of --threshold T or --recall R", 2)
    params = load_params()
    try:
        ctx = context(Path.cwd(), params, check)
        proposal = propose(Path.cwd(), params, check, threshold=threshold, recall=recall, force=force, ctx=ctx)
        proposal["report"] = str(write_effect_report(Path.cwd(), params, proposal, ctx=ctx))
    except (PolicyError, RegistryError) as exc:
        _fail(str(exc), 2)
    typer.echo(format_proposal(proposal))
    typer.echo(f"effect report: {proposal['report']}")
    if dry_run:
        typer.echo("dry run: nothing registered or deployed")
        return
    try:
        result = deploy_policy(Path.cwd(), params, check, proposal["new"], reason=reason, recall=recall, port=port,
                               ready_timeout=ready_timeout, proposal=proposal)
    except (PolicyError, RegistryError, BuildError) as exc:
        _fail(str(exc), 2)
    except DeployError as exc:
        _fail(f"policy deploy failed, the previous instance keeps serving: {exc}", 1)
    typer.echo(f"{check} = {result['new']:.4f} (policy {result['policy_version']}) served by {result['tag']} in "
               f"{result['bento']}: {result['deploy'].get('message', '')}")
    typer.echo(f"took {time.perf_counter() - start:.1f} s")


@app.command()
def select(family: str = typer.Option(..., help="prohibited | detector (its dirt check)"),
           category: Optional[str] = typer.Option(None, help="prohibited only: the category, e.g. cash"),
           k: Optional[int] = typer.Option(None, min=1, help="photos in the queue (default: active_learning.k)"),
           pool: Optional[Path] = typer.Option(None, help="folder of unlabelled photos (default: the prediction log's)")) -> None:
    """Active learning: queue the pool photos the model is least sure of for annotators (Label Studio import file)."""
    from pipelines.active_learning.pool import PoolError
    from pipelines.app.active_learning import select as select_queue

    try:
        queue = select_queue(Path.cwd(), family, category, k=k, pool=pool)
    except (PoolError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(queue.summary())


@app.command("import-labels")
def import_labels(export: Path = typer.Argument(..., help="Label Studio's JSON export of an annotation queue"),
                  batch: Optional[str] = typer.Option(None, help="batch id (default: al-<queue>-<stamp>)")) -> None:
    """Active learning: turn the annotators' answers into a new batch in data/incoming/ (then validate, version)."""
    from pipelines.active_learning.answers import import_labels as to_batch
    from pipelines.active_learning.pool import PoolError

    if not export.is_file():
        _fail(f"{export} is not a file", 2)
    try:
        dest = to_batch(export, Path.cwd(), batch)
    except (PoolError, FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        _fail(str(exc), 2)
    import json

    from pipelines.active_learning.answers import SELECTION_FILE

    done = json.loads((dest / SELECTION_FILE).read_text())
    rel = dest.relative_to(Path.cwd().resolve())
    typer.echo(f"batch {dest.name}: {done['imported']} answered photos -> {rel} "
               f"({done['already_versioned']} already versioned, left out)\n"
               f"  next: reviewops validate {rel} && reviewops version {rel}")


# --- monitoring: drift reference, drift, feedback, false-positive report ---------------------------------------

def _when(text: Optional[str]):
    """An ISO 8601 time from the command line (UTC when no zone is given), or None."""
    import datetime as dt

    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"bad time {text!r}: expected ISO 8601, e.g. 2026-01-05T12:00:00Z", 2)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@app.command()
def reference(batch: Optional[Path] = typer.Option(None, help="a batch directory to use instead of --source"),
              source: Optional[str] = typer.Option(None, help="live_mix (a live-mix sample) or val (the validation "
                                                              "split); default: monitoring.reference_source")) -> None:
    """Store the drift reference: the production models' outputs on live-mix photos (after a promotion)."""
    _store()
    from monitoring.reference import ReferenceError, reference_dir, summary
    from pipelines.app.reference import build_reference
    from pipelines.params import load_params

    params = load_params()
    if batch is not None and not batch.is_dir():
        _fail(f"{batch} is not a directory", 2)
    try:
        meta = build_reference(Path.cwd(), params, batch_dir=batch, source=source, progress=True)
    except (ReferenceError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 2)
    typer.echo(summary(meta, reference_dir(Path.cwd(), params)))


@app.command()
def drift(window: Optional[str] = typer.Option(None, help="live window, e.g. 1d, 6h, 2w (default: monitoring.window)"),
          until: Optional[str] = typer.Option(None, help="end of the window, ISO 8601 (default: now)"),
          alert: bool = typer.Option(True, help="on drift, write the alert and call the webhook"),
          fail_on_drift: bool = typer.Option(False, help="exit 1 when the window drifted")) -> None:
    """Evidently drift report of the live window against the reference: HTML + JSON, UI snapshot, alert on drift."""
    from monitoring.drift import DriftError, run_drift
    from monitoring.workspace import ui_command
    from pipelines.params import load_params

    params = load_params()
    try:
        result = run_drift(Path.cwd(), window, until=_when(until), params=params, alert=alert)
    except DriftError as exc:
        _fail(str(exc), 2)
    colour = {"drift": typer.colors.RED, "no_drift": typer.colors.GREEN}.get(result.status, typer.colors.YELLOW)
    lines = result.summary().splitlines()
    typer.secho(lines[0], fg=colour)
    typer.echo("\n".join(lines[1:]))
    if result.snapshot:
        typer.echo(f"Evidently UI: {ui_command(Path.cwd(), params)}  (project {result.project})")
    if fail_on_drift and result.drifted:
        raise typer.Exit(1)


@app.command()
def feedback(csv_file: Optional[Path] = typer.Argument(None, help="CSV: listing_id,check,verdict[,reviewer,"
                                                                    "reviewed_at,request_id,note,source]"),
             simulate: Optional[Path] = typer.Option(None, help="a batch directory: write the verdicts a reviewer "
                                                                "would give (from its labels) for its logged answers"),
             out: Optional[Path] = typer.Option(None, help="with --simulate: where to write the CSV before importing")) -> None:
    """Import manual-review outcomes and after-sales misses (all rows or none); --simulate makes them from labels."""
    from monitoring.feedback import FeedbackError, import_csv
    from pipelines.params import load_params

    params = load_params()
    if (csv_file is None) == (simulate is None):
        _fail("give a CSV file or --simulate BATCH_DIR", 2)
    if simulate is not None:
        from monitoring.feedback import simulate_feedback, store_url
        from monitoring.prediction_log import PredictionLog
        from pipelines.data.manifest import read_manifest

        if not simulate.is_dir():
            _fail(f"{simulate} is not a directory", 2)
        log = PredictionLog(store_url(Path.cwd(), params))
        rows = simulate_feedback(read_manifest(simulate), log.read(), params.prohibited.categories)
        log.close()
        if rows.empty:
            _fail(f"no logged answer for a listing of {simulate}: send its photos to the reviewer first", 2)
        csv_file = out or Path("monitoring") / "feedback" / f"simulated-{simulate.name}.csv"
        csv_file.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(csv_file, index=False)
        typer.echo(f"wrote {len(rows)} simulated feedback rows to {csv_file}")
    if not csv_file.is_file():
        _fail(f"{csv_file} is not a file", 2)
    try:
        n = import_csv(Path.cwd(), csv_file, params)
    except FeedbackError as exc:
        _fail(str(exc), 2)
    typer.echo(f"imported {n} feedback rows from {csv_file}")


@app.command("fp-report")
def fp_report(days: Optional[int] = typer.Option(None, min=1, help="days of answers covered (default: monitoring.fp_days)"),
              until: Optional[str] = typer.Option(None, help="end of the period, ISO 8601 (default: now)")) -> None:
    """False positives per check from the reviewers' verdicts: rates, trend by day, misses, top false positives."""
    from monitoring.fp_report import run_fp_report

    report = run_fp_report(Path.cwd(), days, until=_when(until))
    typer.echo(report.summary())


def main() -> None:
    """The `reviewops` entry point: an invalid params.yaml is one clear error line (exit 2), not a traceback."""
    from pipelines.params import ParamsError

    try:
        app()
    except ParamsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
