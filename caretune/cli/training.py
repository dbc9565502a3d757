"""Training commands: recipes, plan, preflight, train."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caretune.cli.base import main
from caretune.constants import STOP_TIMEOUT_S
from caretune.planning.estimate import DEFAULT_GPU, GPUS
from caretune.recipe_folders.models import MAX_GPUS


@main.group(invoke_without_command=True)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if a recipe differs from the generator or breaks a folder rule (recipe_folders/rules.py).",
)
@click.option("--overwrite", is_flag=True, help="Also replace recipes you edited (default: they are left as they are).")
@click.pass_context
def recipes(ctx, check_only, overwrite):
    """Write the recipes under recipes/ from caretune/recipe_folders/generator.py (LLaMA-Factory YAML, DeepSpeed JSON).

    Missing files are written; files you edited are kept unless --overwrite. `recipes new` sizes a new folder.
    """
    if ctx.invoked_subcommand:
        return
    from caretune.recipe_folders.generator import drift, write_recipes

    if check_only:
        from caretune.recipe_folders.rules import invariant_problems

        if problems := invariant_problems():
            raise click.ClickException(f"{len(problems)} recipe rule(s) broken:\n" + "\n".join(f"  {p}" for p in problems))
        stale = drift()
        if stale:
            raise click.ClickException(
                f"recipes differ from caretune/recipe_folders/generator.py: {', '.join(stale)} "
                "(`caretune recipes --overwrite` regenerates them, or move your edit into the generator)"
            )
        click.echo("recipes keep every folder rule and match the generator")
        return
    written, kept = write_recipes(overwrite=overwrite)
    click.echo(f"wrote {len(written)} file(s)" + (": " + ", ".join(written) if written else " (all up to date)"))
    if kept:
        click.echo(f"kept your edits in {', '.join(kept)} (--overwrite replaces them)")


@recipes.command("new")
@click.option("--model", required=True, help="Hugging Face id or local folder of the base model (its config.json sizes it).")
@click.option(
    "--gpus",
    type=click.IntRange(1, MAX_GPUS),
    required=True,
    help=f"GPUs per node the recipes are sized for (nodes x GPUs at most {MAX_GPUS}: past 16, a step already holds "
    "one pack per GPU).",
)
@click.option("--nodes", type=click.IntRange(1, MAX_GPUS), default=1, show_default=True, help="Nodes of --gpus GPUs each.")
@click.option("--gpu", "gpu_name", type=click.Choice(sorted(GPUS)), default=DEFAULT_GPU, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="The new folder, e.g. recipes/qwen3-14b/.")
@click.option(
    "--template",
    default=None,
    help="LLaMA-Factory chat template [default: qwen3 (non-thinking) for hybrid Qwen3, qwen3_nothink for Instruct-2507].",
)
@click.option(
    "--general-share",
    type=click.FloatRange(0, 0.5, min_open=True),
    default=None,
    help="Mix the general set (caretune convert general) into training at this share of an epoch's rows, e.g. 0.1.",
)
@click.option("--overwrite", is_flag=True, help="Replace recipes already in --out.")
def recipes_new(model, gpus, nodes, gpu_name, out, template, general_share, overwrite):
    """Write train, predict, chat and export recipes for MODEL on NODES x GPUS x GPU, sized by `caretune plan`'s
    memory model: the cheapest ZeRO stage that fits; per device the most packs that fit, at most 4 (the measured
    best) and at most 16 / all GPUs; then the accumulation that reaches the default's 16 packs per step."""
    from caretune.recipe_folders.generator import sized_recipe, write_new_folder
    from caretune.recipe_folders.render import multi_node_env, target_effective_batch

    folder = Path(out)
    recipe = sized_recipe(folder.name, model, gpus, gpu_name, template, nodes)
    if general_share:
        from caretune.constants import DATASET_INFO
        from caretune.recipe_folders.generator import mixed_in

        recipe = mixed_in(recipe, general_share, DATASET_INFO)
    written = write_new_folder(recipe, folder, overwrite)
    world = recipe.world_size
    effective = recipe.packs_per_step
    click.echo(f"wrote {', '.join(written)}")
    click.echo(
        f"sized for {f'{nodes} nodes x ' if nodes > 1 else ''}{gpus} x {gpu_name}: "
        f"{recipe.per_device_train_batch_size} pack(s) per device x "
        f"{recipe.gradient_accumulation_steps} accumulation = {effective} packs per step"
        + (
            f" (the default is {target_effective_batch()}; {world} GPUs do not divide it)"
            if effective != target_effective_batch()
            else ""
        )
        + f", DeepSpeed {Path(recipe.deepspeed).name if recipe.deepspeed else 'off (one GPU)'}; "
        f"check with: caretune plan {folder / 'lora_sft.yaml'} --gpus {gpus}{f' --nodes {nodes}' * (nodes > 1)} --gpu {gpu_name}"
    )
    if nodes > 1:
        click.echo(f"train on each node: {multi_node_env(recipe)}caretune train {folder / 'lora_sft.yaml'}")


def _per_dataset(values: tuple[str, ...], option: str, expected: str, convert=str) -> dict:
    """`DATASET=VALUE` options as {dataset: convert(VALUE)}; `convert` raises ValueError on a bad value."""
    parsed = {}
    for value in values:
        name, _, given = value.partition("=")
        try:
            if not name or not given:
                raise ValueError
            parsed[name] = convert(given)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected {expected}", param_hint=option) from None
    return parsed


def _row_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(text)
    return int(text)


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--gpus", type=click.IntRange(min=1), default=None, help="GPUs per node; default: what a shipped recipe is sized for, else 1."
)
@click.option(
    "--nodes", type=click.IntRange(min=1), default=None, help="Nodes of --gpus GPUs each; default: a shipped recipe's, else 1."
)
@click.option("--gpu", "gpu_name", type=click.Choice(list(GPUS)), default=DEFAULT_GPU, show_default=True)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="Tokenize a seeded random N rows per dataset and extrapolate (default: all rows).",
)
@click.option(
    "--rows",
    "rows",
    multiple=True,
    metavar="DATASET=N",
    help="Plan for N rows of DATASET (e.g. the full set when only a shard is converted).",
)
@click.option(
    "--lengths",
    "lengths",
    multiple=True,
    metavar="DATASET=PROFILE",
    help="Draw DATASET's row lengths from a length profile (a shipped one such as chatmed, measured on the real "
    "ChatMed shard, or a `caretune plan --json` file) instead of tokenizing its rows; with --rows for its size.",
)
@click.option(
    "--bench",
    "bench",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Throughput from a `caretune bench --out` JSON instead of an assumed utilisation.",
)
@click.option(
    "--hfu",
    type=click.FloatRange(0.01, 1.0),
    default=None,
    help="Assumed hardware FLOPs utilisation (recompute included) when no --bench; default 0.40.",
)
@click.option(
    "--mfu",
    type=click.FloatRange(0.01, 1.0),
    default=None,
    help="Assumed model FLOPs utilisation (4·N + attention per token, no recompute) instead of --hfu.",
)
@click.option(
    "--attention",
    type=click.Choice(["fa2", "sdpa"]),
    default=None,
    help="Attention the GPUs will run (default: fa2 when the recipe asks for it, else sdpa).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object (keys in caretune/planning/plan.py).")
@click.option(
    "--cache/--no-cache",
    "use_cache",
    default=True,
    show_default=True,
    help="Reuse token lengths computed for the same data, tokenizer and template (.cache/lengths/).",
)
def plan(recipe, gpus, nodes, gpu_name, sample, rows, lengths, bench, hfu, mfu, attention, as_json, use_cache):
    """Rows, tokens, padding, steps, memory per GPU, wall time and GPU-hours of a LoRA recipe (SFT or DPO), before
    launching.

    Throughput is reported as MFU (4·N + attention per token) and HFU (with the recomputed forward pass). Planned
    past the rows tokenized (--rows, --sample), a dataset's lengths are resampled to the planned count (at most
    100,000) before packing, so packs fill as the full data's would."""
    from caretune.planning.figures import format_plan
    from caretune.planning.plan import make_plan
    from caretune.planning.recipe_settings import read_recipe
    from caretune.recipe_folders.generator import sized_layout

    sized_gpus, sized_nodes = sized_layout(recipe) or (1, 1)
    settings = read_recipe(recipe)
    if settings.stage == "dpo":
        from caretune.planning.pairs import format_pair_plan, make_pair_plan

        if sample or rows or lengths or bench or mfu is not None or attention:
            raise click.UsageError("a DPO plan takes --gpus, --nodes, --gpu, --hfu and --json (it tokenizes every pair)")
        dpo = make_pair_plan(
            recipe, settings, gpus=(gpus or sized_gpus) * (nodes or sized_nodes), gpu_name=gpu_name, hfu=hfu, use_cache=use_cache
        )
        click.echo(json.dumps(dpo.to_json(), ensure_ascii=False, indent=2) if as_json else format_pair_plan(dpo))
        return
    result = make_plan(
        recipe,
        gpus=(gpus or sized_gpus) * (nodes or sized_nodes),
        gpu_name=gpu_name,
        sample=sample,
        rows_override=_per_dataset(rows, "--rows", "DATASET=ROWS, e.g. multi-med=500000", _row_count),
        length_profiles=_per_dataset(lengths, "--lengths", "DATASET=PROFILE, e.g. multi-med=chatmed"),
        bench=bench,
        mfu=mfu,
        hfu=hfu,
        attention=attention,
        use_cache=use_cache,
    )
    click.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2) if as_json else format_plan(result))


def _preflight(recipe, processes, nodes, overwrite, fresh, allow_thinking):
    from caretune.training.preflight import preflight

    launch = preflight(recipe, processes=processes, nodes=nodes, overwrite=overwrite, fresh=fresh, allow_thinking=allow_thinking)
    for note in launch.notes:
        click.echo(f"preflight: {note}")
    return launch


_GPUS = click.option(
    "--gpus",
    "processes",
    type=click.IntRange(min=1),
    default=None,
    help="GPUs (processes) per node; default: every visible GPU, or 1 on CPU.",
)
_NODES = click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Nodes of --gpus GPUs each (default: NNODES, else 1); each node also needs NODE_RANK, MASTER_ADDR, MASTER_PORT.",
)
_ALLOW_THINKING = click.option(
    "--allow-thinking", is_flag=True, help="Accept a recipe that puts a hybrid Qwen3 into thinking mode (refused by default)."
)


@main.command("preflight")
@click.argument("recipe", type=click.Path(dir_okay=False))
@_GPUS
@_NODES
@_ALLOW_THINKING
def preflight_command(recipe, processes, nodes, allow_thinking):
    """Check a recipe before any GPU time is spent (keys, values, model, datasets, template, DeepSpeed, GPUs,
    output_dir), exactly as `caretune train RECIPE` does before launching."""
    launch = _preflight(recipe, processes, nodes, overwrite=False, fresh=False, allow_thinking=allow_thinking)
    from caretune.training.preflight import visible_gpu_count

    where = "GPU" if visible_gpu_count() else "CPU"
    nodes_text = f" on each of {launch.nodes} nodes" if launch.nodes > 1 else ""
    click.echo(f"preflight: {recipe} is ready ({launch.processes} {where} process(es) per node{nodes_text})")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@_GPUS
@_NODES
@click.option("--overwrite", is_flag=True, help="Train again over a finished run (moved aside, not deleted).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an unfinished run (moved aside).")
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=STOP_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="After SIGTERM or Ctrl-C (passed on to every training process), how long they get before they are killed.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Train on a Ray cluster with Ray Train (ADDRESS: host:port of its head; alone: the local cluster). Workers: "
    "--gpus x --nodes, else one per device of the cluster.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --ray: when a worker dies, restart the workers up to this many times, resuming from the last checkpoint.",
)
@_ALLOW_THINKING
def train(recipe, processes, nodes, overwrite, fresh, stop_timeout, ray_address, max_failures, allow_thinking):
    """Preflight RECIPE, then `llamafactory-cli train` it (torchrun for DeepSpeed, several GPUs or nodes).

    Multi-node: --nodes (or NNODES), and NODE_RANK, MASTER_ADDR, MASTER_PORT on each node (passed to LLaMA-Factory).
    """
    from contextlib import nullcontext

    if max_failures and not ray_address:
        raise click.UsageError("--max-failures restarts Ray Train workers: use it with --ray")

    from caretune.recipe import Recipe
    from caretune.training.preflight import first_node
    from caretune.training.runs import claim_output_dir
    from caretune.training.train import command, launch_env, run

    output_dir = Recipe.load(recipe).output_dir
    recording = first_node()  # every node of a multi-node run trains into one output_dir; the first records the run
    with claim_output_dir(output_dir) if output_dir and recording else nullcontext():  # one caretune train per output_dir
        launch = _preflight(recipe, processes, nodes, overwrite, fresh, allow_thinking)
        if ray_address:
            from caretune.training.train import use_ray

            workers = processes * launch.nodes if processes else None
            launch.nodes = 1  # Ray Train places the workers on the cluster's nodes
            use_ray(launch, ray_address, workers, max_failures)
            click.echo(f"ray: {launch.processes} worker(s) on the cluster {ray_address} (spec {launch.ray_spec})")
        env = launch_env(launch)
        shown = " ".join(f"{k}={env[k]}" for k in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "NNODES", "NODE_RANK") if k in env)
        click.echo(f"launch: {shown + ' ' if shown else ''}{' '.join(command(launch))}")
        code = run(launch, stop_timeout)
        if launch.args.get("output_dir") and recording:
            from caretune.training.runs import manifest_digest_line

            click.echo(manifest_digest_line(launch.args["output_dir"]))
    if code != 0:
        raise click.ClickException(f"llamafactory-cli train exited with code {code}")
