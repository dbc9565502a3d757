"""The run commands: runs (every run under saves/), runs show and runs verify (one run's manifest), runs base-copy
(a recipe's base-model copy)."""

from __future__ import annotations

import json

import click

from caretune.cli.base import main
from caretune.recipe import SAVES


@main.group(invoke_without_command=True)
@click.option(
    "--saves",
    type=click.Path(file_okay=False),
    default=str(SAVES),
    show_default=True,
    help="Folder holding the runs (LLaMA-Factory's output_dir of each recipe lies under it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def runs(ctx, saves, as_json):
    """Every run under saves/: state (running, finished, interrupted, failed), step/total, last loss, eval
    metrics, elapsed time and, for running ones, the time left. `runs show` and `runs verify` read one run's
    manifest."""
    if ctx.invoked_subcommand:
        return
    from caretune.training.runs import format_runs, list_runs, strict

    found = list_runs(saves)
    if as_json:
        click.echo(json.dumps(strict(found), ensure_ascii=False, indent=2, allow_nan=False))
    elif not found:
        click.echo(f"no runs under {saves}/ yet (caretune train RECIPE starts one)")
    else:
        click.echo(format_runs(found))


@runs.command("show")
@click.argument("run", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def runs_show(run, as_json):
    """The manifest of RUN (its output_dir, or the .run.json beside it): code, recipe, data, packages, hardware,
    base model, checkpoints and every attempt."""
    from caretune.basics.errors import UserError
    from caretune.training.runs import load_manifest, manifest_digest_line
    from caretune.training.verification import describe

    manifest, output_dir = load_manifest(run)
    try:
        click.echo(json.dumps(manifest, ensure_ascii=False, indent=2) if as_json else describe(manifest))
        if not as_json:
            click.echo(manifest_digest_line(output_dir))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise UserError(f"{run}: the manifest is malformed ({type(err).__name__}: {err}); --json prints it as it is") from None


@runs.command("base-copy")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
def runs_base_copy(recipe):
    """Write RECIPE without its adapter under the base model's run folder (saves/<model folder>/base/) and print the
    copy's path: what `--base` evaluates, and the base side of `caretune judge pairwise`."""
    from caretune.recipe import Recipe

    click.echo(Recipe.load(recipe).base_copy().path)


@runs.command("verify")
@click.argument("run", type=click.Path())
@click.option("--deep", is_flag=True, help="Also hash the base model's weights (else their sizes are compared).")
def runs_verify(run, deep):
    """Check RUN against its manifest, section by section: code (commit and uncommitted changes), recipe, DeepSpeed
    config, data and conversion reports, base model, outputs, checkpoints, packages. Paths resolve from the
    manifest. Exit 1 naming each difference and each section never recorded."""
    from caretune.training.runs import load_manifest
    from caretune.training.verification import verify

    manifest, output_dir = load_manifest(run)
    problems, verified = verify(manifest, output_dir, deep=deep)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    click.echo(f"verified: {output_dir} matches its manifest ({', '.join(verified)}{', weights hashed' if deep else ''})")
