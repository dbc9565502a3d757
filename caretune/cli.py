"""The `caretune` command. Heavy libraries (torch, transformers, LLaMA-Factory) load inside commands only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caretune import __version__
from caretune.constants import (
    CUTOFF_LEN,
    DATA_DIR,
    DATASET_INFO,
    DEFAULT_EVAL_SIZE,
    DEFAULT_LENGTH_PROFILE,
    DEFAULT_TRAIN_RECIPE,
    MAX_EVAL_FRACTION,
    TEMPLATE,
    TINY_MODEL_DIR,
)
from caretune.estimate import DEFAULT_GPU, GPUS
from caretune.serve import DEFAULT_API_PORT, DEFAULT_HOST, DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_WEBUI_PORT
from converters.errors import UserError


class _UsageError(click.ClickException):
    """A command line click cannot parse: one line and a pointer to --help, exit 2 as click's own."""

    exit_code = 2


class _OneLineErrors(click.Group):
    """Every user-caused error (converters.errors.UserError, a path that cannot be used) ends as one line, exit 1;
    a command line that does not parse is one line too, exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            command = err.ctx.command_path if err.ctx else ctx.command_path
            raise _UsageError(f"{err.format_message()} (see `{command} --help`)") from None
        except UserError as err:
            raise click.ClickException(str(err)) from None
        except PermissionError as err:
            raise click.ClickException(
                f"{err.filename or err}: permission denied ({err.strerror}); choose a path you can write, or fix its permissions"
            ) from None
        except OSError as err:
            if not err.filename:  # not about a path the user gave: a bug, shown with its traceback
                raise
            raise click.ClickException(f"{err.filename}: {err.strerror or err}; choose another path") from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="caretune")
def main() -> None:
    """Fine-tune Qwen3 into a careful Chinese medical-consultation assistant with LLaMA-Factory."""


def _convert_command(source_name: str, help_text: str):
    from converters.choices import APPEND, CARE_POLICIES, FILTER_REASONS, LAYOUTS, SYSTEM_LAYOUT

    def layout_option(command):
        if source_name != "chatmed":  # HuatuoGPT2 rows always carry the prompt as `system`
            return click.option("--layout", hidden=True, default=SYSTEM_LAYOUT, type=click.Choice([SYSTEM_LAYOUT]))(command)
        return click.option(
            "--layout",
            type=click.Choice(LAYOUTS),
            default=SYSTEM_LAYOUT,
            show_default=True,
            help="system: the medical prompt as the rows' system prompt, as chat and the API send it; "
            "walkthrough: as the alpaca instruction, the question as input.",
        )(command)

    @click.argument("raw", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--out",
        type=click.Path(dir_okay=False),
        default=None,
        help="Train output (default: DATA_DIR/<dataset>.json); eval, report and rejects go beside it.",
    )
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=DATA_DIR,
        show_default=True,
        help="Output folder when --out is not given; datasets already converted here are deduped against.",
    )
    @click.option(
        "--eval-size",
        type=click.IntRange(min=0),
        default=DEFAULT_EVAL_SIZE,
        show_default=True,
        help=f"Rows held out for evaluation (never more than {MAX_EVAL_FRACTION:.0%} of the rows kept).",
    )
    @click.option(
        "--scrub-pii/--no-scrub-pii",
        default=True,
        show_default=True,
        help="Mask phone numbers, ID-card numbers and e-mail addresses in patient text.",
    )
    @click.option(
        "--filters",
        "filter_set",
        type=click.Choice(["all", "none"]),
        default="all",
        show_default=True,
        help="Quality filters and wrapper stripping (converters/quality.py): all, or none for the rows as they come.",
    )
    @click.option(
        "--keep",
        "keep",
        multiple=True,
        type=click.Choice(FILTER_REASONS),
        metavar="REASON",
        help=f"Switch one filter off (repeatable): {', '.join(FILTER_REASONS)}.",
    )
    @click.option(
        "--care-reminder",
        type=click.Choice(CARE_POLICIES),
        default=APPEND,
        show_default=True,
        help="Answers that do not advise seeing a doctor (or, to an urgent question, emergency care): "
        "append a fixed reminder, drop the row, or keep it as it is (off).",
    )
    @layout_option
    @click.option(
        "--dataset-info",
        type=click.Path(dir_okay=False),
        default=DATASET_INFO,
        show_default=True,
        help="LLaMA-Factory registry to add the outputs to.",
    )
    @click.option("--register/--no-register", default=True, show_default=True, help="Add the outputs to --dataset-info.")
    @click.option(
        "--card/--no-card",
        default=True,
        show_default=True,
        help="Write <dataset>.card.md (counts, care shares, token-length histogram, examples) beside the report.",
    )
    @click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Processes converting JSON Lines input (default: one per CPU core, at most 4, for inputs of 16 MB or more; else 1).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a summary line.")
    @click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="When another conversion holds the same outputs or registry, wait at most this long "
        "(default: wait until it finishes).",
    )
    def command(
        raw,
        out,
        data_dir,
        eval_size,
        scrub_pii,
        filter_set,
        keep,
        care_reminder,
        layout,
        dataset_info,
        register,
        card,
        progress,
        workers,
        as_json,
        lock_timeout,
    ):
        from converters.card import CardCollector
        from converters.pipeline import SOURCES, Options, Outputs, convert_file, summary_line

        source = SOURCES[source_name]
        outputs = Outputs.for_source(source, out, data_dir)
        filters = frozenset(FILTER_REASONS if filter_set == "all" else ()) - set(keep)
        options = Options(
            scrub_pii=scrub_pii, filters=filters, strip_wrappers=filter_set == "all", care_reminder=care_reminder, layout=layout
        )
        collector = CardCollector() if card else None
        card_line = ""

        def write_data_card(report: dict) -> None:  # under the output set's lock, beside the outputs it describes
            nonlocal card_line
            from caretune.datacard import write_card
            from caretune.tokenizer import TokenizerError, offline_tokenizer

            try:
                card_line = f"; data card {write_card(report, source, collector, offline_tokenizer())}"
            except TokenizerError as err:
                card_line = f"; no data card ({err})"

        report = convert_file(
            source,
            raw,
            outputs,
            eval_size=eval_size,
            max_eval_fraction=MAX_EVAL_FRACTION,
            options=options,
            registry_path=dataset_info if register else None,
            progress=progress,
            workers=workers,
            card=collector,
            on_published=write_data_card if collector is not None else None,
            lock_timeout=lock_timeout,
            log=lambda line: click.echo(f"convert: {line}", err=True),
        )
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=False, indent=2))
            return
        registered = ""
        if register:
            state = "updated" if report["registry_changed"] else "already up to date"
            registered = f"; registered {outputs.name}, {outputs.eval_name} in {dataset_info} ({state})"
        click.echo(summary_line(report) + registered + card_line)

    command.__doc__ = help_text
    return command


@main.group()
def convert() -> None:
    """Convert raw medical dialogue files into registered LLaMA-Factory datasets."""


convert.command("chatmed")(
    _convert_command(
        "chatmed",
        """ChatMed_Consult JSON Lines {"query","response"} -> alpaca records (multi-med).

    RAW may be JSON Lines or a JSON array, UTF-8 with or without BOM.""",
    )
)
convert.command("huatuo")(
    _convert_command(
        "huatuo",
        """HuatuoGPT2 {"conversations":[...]} or {"data":["问：…","答：…"]} rows -> sharegpt records (huatuo2-sft).

    RAW may be one JSON array (read incrementally) or JSON Lines, UTF-8 with or without BOM.""",
    )
)


@main.command()
@click.argument("names", nargs=-1)
@click.option(
    "--dataset-info",
    type=click.Path(dir_okay=False),
    default=DATASET_INFO,
    show_default=True,
    help="Registry whose folder is LLaMA-Factory's dataset_dir.",
)
@click.option(
    "--model",
    "model_name_or_path",
    default=None,
    help="Tokenizer source: a local model folder or hub id (default: Qwen/Qwen3-8B, else the verified offline Qwen3 tokenizer).",
)
@click.option("--template", default=TEMPLATE, show_default=True, help="LLaMA-Factory chat template.")
@click.option(
    "--cutoff-len",
    type=click.IntRange(min=1),
    default=CUTOFF_LEN,
    show_default=True,
    help="Rows longer than this many tokens would be truncated in training.",
)
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Check only the first N rows of each dataset.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--cache/--no-cache",
    "use_cache",
    default=True,
    show_default=True,
    help="Reuse token lengths computed for the same data, tokenizer and template (.cache/lengths/).",
)
def check(names, dataset_info, model_name_or_path, template, cutoff_len, sample, as_json, use_cache):
    """Load registered datasets through LLaMA-Factory's own data path and report what training would see.

    NAMES default to every dataset in the registry. Exits non-zero when a dataset fails to load
    or LLaMA-Factory would drop rows.
    """
    from caretune.check import check_datasets, format_results

    results = check_datasets(
        list(names),
        dataset_info,
        model_name_or_path=model_name_or_path,
        template=template,
        cutoff_len=cutoff_len,
        sample=sample,
        use_cache=use_cache,
    )
    click.echo(json.dumps(results, ensure_ascii=False, indent=2) if as_json else format_results(results, cutoff_len))
    failed = [r["dataset"] for r in results if r["error"] or r["dropped"]]
    if failed:
        raise click.ClickException(f"check failed for: {', '.join(failed)}")


@main.command()
@click.argument("dataset", type=click.Choice(["chatmed", "huatuo"]))
@click.option("--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Hub to download from.")
@click.option("--dest", type=click.Path(file_okay=False), default=f"{DATA_DIR}/raw", show_default=True)
def fetch(dataset, source, dest):
    """Download a raw dataset file from Hugging Face or ModelScope into DEST."""
    from caretune.fetch import fetch_raw

    path = fetch_raw(dataset, source, dest)
    click.echo(f"downloaded {path}")
    click.echo(f"next: caretune convert {dataset} {path}")


@main.command("tiny-model")
@click.argument("directory", type=click.Path(file_okay=False), default=TINY_MODEL_DIR)
def tiny_model(directory):
    """Build a tiny random Qwen3 (the CPU stand-in for Qwen3-8B) with the real Qwen3 tokenizer in DIRECTORY."""
    from caretune.tiny_model import build_tiny_model

    path = build_tiny_model(directory)
    click.echo(f"tiny Qwen3 written to {path} (random weights: its answers are noise)")


@main.group(invoke_without_command=True)
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 if a recipe differs from the generator.")
@click.option("--overwrite", is_flag=True, help="Also replace recipes you edited (default: they are left as they are).")
@click.pass_context
def recipes(ctx, check_only, overwrite):
    """Write the recipes under recipes/ from caretune/recipes.py (LLaMA-Factory YAML, DeepSpeed JSON).

    Missing files are written; files you edited are kept unless --overwrite. `recipes new` sizes a new folder.
    """
    if ctx.invoked_subcommand:
        return
    from caretune.recipes import drift, write_recipes

    if check_only:
        stale = drift()
        if stale:
            raise click.ClickException(
                f"recipes differ from caretune/recipes.py: {', '.join(stale)} "
                "(`caretune recipes --overwrite` regenerates them, or move your edit into the generator)"
            )
        click.echo("recipes match the generator")
        return
    written, kept = write_recipes(overwrite=overwrite)
    click.echo(f"wrote {len(written)} file(s)" + (": " + ", ".join(written) if written else " (all up to date)"))
    if kept:
        click.echo(f"kept your edits in {', '.join(kept)} (--overwrite replaces them)")


@recipes.command("new")
@click.option("--model", required=True, help="Hugging Face id or local folder of the base model (its config.json sizes it).")
@click.option("--gpus", type=click.IntRange(min=1), required=True, help="GPUs per node the recipes are sized for.")
@click.option("--gpu", "gpu_name", type=click.Choice(sorted(GPUS)), default=DEFAULT_GPU, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="The new folder, e.g. recipes/qwen3-14b/.")
@click.option("--template", default=TEMPLATE, show_default=True, help="LLaMA-Factory chat template (Qwen3: no thinking).")
@click.option("--overwrite", is_flag=True, help="Replace recipes already in --out.")
def recipes_new(model, gpus, gpu_name, out, template, overwrite):
    """Write train, predict, chat and export recipes for MODEL on GPUS x GPU, sized by `caretune plan`'s memory
    model: the cheapest ZeRO stage that fits, the packs per device that fit (at most 4, the measured best),
    and the accumulation that keeps the default's effective batch of 16 packs."""
    from caretune.recipes import sized_recipe, target_effective_batch, write_new_folder

    if template == TEMPLATE and "qwen3" not in model.lower():
        raise click.ClickException(f"{model} does not look like a Qwen3 model: pass --template (LLaMA-Factory's name)")
    folder = Path(out)
    recipe = sized_recipe(folder.name, model, gpus, gpu_name, template)
    written = write_new_folder(recipe, folder, overwrite)
    effective = recipe.per_device_train_batch_size * gpus * recipe.gradient_accumulation_steps
    click.echo(f"wrote {', '.join(written)}")
    click.echo(
        f"sized for {gpus} x {gpu_name}: {recipe.per_device_train_batch_size} pack(s) per device x "
        f"{recipe.gradient_accumulation_steps} accumulation = {effective} packs per step"
        + (
            f" (the default is {target_effective_batch()}; {gpus} GPUs do not divide it)"
            if effective != target_effective_batch()
            else ""
        )
        + f", DeepSpeed {Path(recipe.deepspeed).name if recipe.deepspeed else 'off (one GPU)'}; "
        f"check with: caretune plan {folder / 'lora_sft.yaml'}"
    )


def _rows_option(values: tuple[str, ...]) -> dict[str, int]:
    rows = {}
    for value in values:
        name, _, count = value.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise click.BadParameter(f"{value!r}: expected DATASET=ROWS, e.g. multi-med=500000", param_hint="--rows")
        rows[name] = int(count)
    return rows


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--gpus", type=click.IntRange(min=1), default=None, help="GPUs in the run; default: what a shipped recipe is sized for, else 1."
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
    "--bench",
    "bench",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Throughput from a `caretune bench --out` JSON instead of an assumed MFU.",
)
@click.option("--mfu", type=click.FloatRange(0.01, 1.0), default=None, help="Assumed MFU when no --bench (default 0.40).")
@click.option(
    "--attention",
    type=click.Choice(["fa2", "sdpa"]),
    default=None,
    help="Attention the GPUs will run (default: fa2 when the recipe asks for it, else sdpa).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object (keys in caretune/plan.py).")
@click.option(
    "--cache/--no-cache",
    "use_cache",
    default=True,
    show_default=True,
    help="Reuse token lengths computed for the same data, tokenizer and template (.cache/lengths/).",
)
def plan(recipe, gpus, gpu_name, sample, rows, bench, mfu, attention, as_json, use_cache):
    """Rows, tokens, padding, steps, memory per GPU, wall time and GPU-hours of a LoRA recipe, before launching."""
    from caretune.plan import format_plan, make_plan
    from caretune.recipes import sized_gpus

    result = make_plan(
        recipe,
        gpus=gpus or sized_gpus(recipe) or 1,
        gpu_name=gpu_name,
        sample=sample,
        rows_override=_rows_option(rows),
        bench=bench,
        mfu=mfu,
        attention=attention,
        use_cache=use_cache,
    )
    click.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2) if as_json else format_plan(result))


@main.command()
@click.option(
    "--model",
    default=None,
    help="A Qwen3 name or local folder (its config only); default: Qwen/Qwen3-8B on a GPU, the tiny Qwen3 on CPU.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="NAME",
    help="Run only these, e.g. padding-sdpa, neat-packing-fa2-liger (default: all; unavailable ones are skipped).",
)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Timed steps per variant.")
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True, help="Untimed steps first.")
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per device for padding variants (default: 24 on a GPU, as the walkthrough; 4 on CPU).",
)
@click.option(
    "--pack-batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Packs of up to --cutoff-len tokens per device for packing variants.",
)
@click.option("--cutoff-len", type=click.IntRange(min=16), default=None, help="Default: 2048 on a GPU, 512 on CPU.")
@click.option(
    "--profile",
    default=DEFAULT_LENGTH_PROFILE,
    show_default=True,
    help="Row-length profile: a shipped one, or a `caretune plan --json` output.",
)
@click.option("--work-dir", type=click.Path(file_okay=False), default=".cache/bench", show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the results as JSON here (updated after each variant).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the results table to this Markdown file (e.g. benchmarks/out/train-bench.md).",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Stop each variant's training after this long and report the steps done (default: no limit).",
)
def bench(model, variants, steps, warmup, micro_batch, pack_batch, cutoff_len, profile, work_dir, out, record, time_budget):
    """LoRA training tokens/s, MFU and peak memory of a Qwen3 shape (random weights) through LLaMA-Factory's trainer."""
    from caretune.bench import append_table, format_report, run_bench, write_results

    report = run_bench(
        model=model,
        variants=list(variants) or None,
        steps=steps,
        warmup=warmup,
        micro_batch=micro_batch,
        pack_batch=pack_batch,
        cutoff_len=cutoff_len,
        profile=profile,
        work_dir=Path(work_dir),
        time_budget=time_budget,
        log=lambda line: click.echo(line, err=True),
        on_update=(lambda so_far: write_results(so_far, Path(out))) if out else None,
    )
    table = format_report(report)
    click.echo(table)
    if record:
        append_table(table, Path(record))
    if not any("real_tokens_per_s" in v for v in report["variants"]):
        raise click.ClickException("no variant ran")


def _preflight(recipe, processes, overwrite, fresh):
    from caretune.preflight import preflight

    plan = preflight(recipe, processes=processes, overwrite=overwrite, fresh=fresh)
    for note in plan.notes:
        click.echo(f"preflight: {note}")
    return plan


_GPUS_HELP = "Processes (GPUs) per node; default: every visible GPU, or 1 on CPU."


@main.command("preflight")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--gpus", "processes", type=click.IntRange(min=1), default=None, help=_GPUS_HELP)
def preflight_command(recipe, processes):
    """Check a recipe before any GPU time is spent (keys, values, model, datasets, template, DeepSpeed, GPUs,
    output_dir), exactly as `caretune train RECIPE` does before launching."""
    plan = _preflight(recipe, processes, overwrite=False, fresh=False)
    from caretune.preflight import visible_gpu_count

    where = "GPU" if visible_gpu_count() else "CPU"
    click.echo(f"preflight: {recipe} is ready ({plan.processes} {where} process(es) per node)")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--gpus", "processes", type=click.IntRange(min=1), default=None, help=_GPUS_HELP)
@click.option("--overwrite", is_flag=True, help="Train again over a finished run (moved aside, not deleted).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an unfinished run (moved aside).")
def train(recipe, processes, overwrite, fresh):
    """Preflight RECIPE, then `llamafactory-cli train` it (torchrun for DeepSpeed, several GPUs or nodes).

    Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT on each node (passed to LLaMA-Factory).
    """
    from caretune.train import command, launch_env, run

    plan = _preflight(recipe, processes, overwrite, fresh)
    env = launch_env(plan)
    shown = " ".join(f"{k}={env[k]}" for k in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "NNODES", "NODE_RANK") if k in env)
    click.echo(f"launch: {shown + ' ' if shown else ''}{' '.join(command(plan))}")
    code = run(plan)
    if code != 0:
        raise click.ClickException(f"llamafactory-cli train exited with code {code}")


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--query", default=None, help="Answer this one question and exit (for scripts).")
@click.option("--system", default=None, help="System prompt (default: the recipe's, which tells users to see a doctor).")
def chat(recipe, query, system):
    """Chat with the model and adapter of a chat recipe (LLaMA-Factory's chat; --query answers once).

    With --query, <think> blocks are never printed.
    """
    if query is not None and not query.strip():
        raise click.ClickException("--query is empty; ask a question")
    if query is None:
        import os

        from caretune.lf import cli_command
        from caretune.preflight import check_model_paths, load_recipe

        check_model_paths(Path(recipe), load_recipe(recipe))
        command = [*cli_command(), "chat", recipe, *([f"default_system={system}"] if system else [])]
        os.execv(command[0], command)
    from caretune.chat import answer

    click.echo(answer(recipe, query, system))


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Other than loopback only with API_KEY set.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_API_PORT, show_default=True)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_REQUEST_TIMEOUT_S,
    show_default=True,
    help="Seconds a request may take from arrival, queue included (then 504).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_QUEUE,
    show_default=True,
    help="Requests that may wait behind the one being answered (more get 503 with Retry-After).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages from ORIGIN (e.g. https://app.example.org); repeatable. Default: none.",
)
@click.option(
    "--log-bodies", is_flag=True, help="Also log request and answer text (phone, ID-card and e-mail masked). Default: counts only."
)
@click.option("--model-name", default="caretune", show_default=True, help="The model id /v1/models lists.")
def api(recipe, host, port, request_timeout, max_queue, cors_origins, log_bodies, model_name):
    """OpenAI-compatible chat API (/v1/models, /v1/chat/completions) over a chat recipe's model.

    max_tokens is capped at the recipe's max_new_tokens; one answer is generated at a time. With API_KEY set,
    every route needs 'Authorization: Bearer $API_KEY'. <think> blocks are never sent; patient text is never
    logged unless --log-bodies.
    """
    from caretune.serve import serve_api

    click.echo(f"api: http://{host}:{port}/v1", err=True)
    serve_api(
        recipe,
        host,
        port,
        {
            "request_timeout_s": request_timeout,
            "max_queue": max_queue,
            "cors_origins": tuple(cors_origins),
            "log_bodies": log_bodies,
            "model_name": model_name,
        },
    )


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False), default=DEFAULT_TRAIN_RECIPE)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Other than loopback only with API_KEY set.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_WEBUI_PORT, show_default=True)
@click.option(
    "--dataset-info",
    type=click.Path(dir_okay=False),
    default=DATASET_INFO,
    show_default=True,
    help="Its folder becomes the WebUI's default dataset_dir, so our datasets are listed.",
)
def webui(recipe, host, port, dataset_info):
    """LLaMA-Factory's WebUI with RECIPE's values in the training form (default: the Qwen3-8B training recipe).

    Its "Preview command" then shows the recipe's keys; login 'caretune' / $API_KEY when a key is set.
    """
    import os

    from caretune.serve import check_bind
    from caretune.webui import launch

    check_bind(host, os.environ.get("API_KEY"))
    if not Path(recipe).is_file():
        raise click.ClickException(f"{recipe}: no such recipe (run from the repository root, or name one)")
    click.echo(f"webui: http://{host}:{port}/ with {recipe} in the training form", err=True)
    launch(recipe, str(Path(dataset_info).resolve().parent), host, port, os.environ.get("API_KEY") or None)


@main.command()
@click.option(
    "--saves",
    type=click.Path(file_okay=False),
    default="saves",
    show_default=True,
    help="Folder holding the runs (LLaMA-Factory's output_dir of each recipe lies under it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs(saves, as_json):
    """Every run under saves/: state (running, finished, interrupted, failed), step/total, last loss, eval
    metrics, elapsed time and, for running ones, the time left."""
    from caretune.runs import format_runs, list_runs

    found = list_runs(saves)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
    elif not found:
        click.echo(f"no runs under {saves}/ yet (caretune train RECIPE starts one)")
    else:
        click.echo(format_runs(found))


@main.command("export")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
def export_command(recipe):
    """Merge the LoRA adapter into the base model; the exported chat template defaults to non-thinking."""
    from caretune.export import export
    from caretune.preflight import check_siblings, load_recipe

    for warning in check_siblings(Path(recipe), load_recipe(recipe)):
        click.echo(f"export: {warning}", err=True)
    path = export(recipe)
    click.echo(f"exported to {path}: chat template and Ollama Modelfile default to non-thinking")


_BASE_HELP = "Evaluate the base model without the adapter, under saves/<model folder>/base, for the report's side-by-side."


@main.command("eval")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--base", is_flag=True, help=_BASE_HELP)
@click.option(
    "--backend",
    type=click.Choice(["trainer", "vllm", "huggingface"]),
    default="trainer",
    show_default=True,
    help="trainer: LLaMA-Factory's predict path; vllm: its vLLM engine (GPU, much faster); huggingface: its HF chat engine.",
)
def eval_command(recipe, base, backend):
    """Greedy generation on the held-out splits (BLEU-4, ROUGE) with safety metrics and the emergency prompt set."""
    from caretune.evaluate import evaluate, format_report
    from caretune.recipes import base_model_recipe, base_run_dir

    if base:
        recipe = base_model_recipe(recipe, base_run_dir(recipe))
    report = evaluate(recipe, backend)
    click.echo(format_report(report))


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    default=["data/sample/mcq"],
    show_default=True,
    help="CMMLU-style (dev/, test/) or C-Eval-style (dev/, val/) folder of per-subject CSVs; repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the task folder, the evaluator's output and mcq.json go (default: beside the recipe's adapter).",
)
@click.option("--n-shot", type=click.IntRange(0, 5), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--base", is_flag=True, help=_BASE_HELP)
def mcq(recipe, sources, out_dir, n_shot, batch_size, base):
    """Medical multiple-choice accuracy (5-shot, A-D logits) with LLaMA-Factory's evaluator, per subject and overall."""
    from caretune.mcq import run_mcq
    from caretune.preflight import load_recipe
    from caretune.recipes import base_model_recipe, base_run_dir

    if base:
        run_dir = base_run_dir(recipe)
        recipe = base_model_recipe(recipe, run_dir)
        out_dir = out_dir or f"{run_dir}/mcq"
    if out_dir is None:
        args = load_recipe(recipe)
        base = args.get("adapter_name_or_path") or f"saves/{Path(recipe).parent.name}/base"
        out_dir = str(Path(base).parent / "mcq")
    result = run_mcq(recipe, list(sources), out_dir, n_shot=n_shot, batch_size=batch_size)
    for subject, s in result["subjects"].items():
        click.echo(f"{subject:<28} {s['correct']:>4}/{s['total']:<4} {s['accuracy']:.1%}")
    o = result["overall"]
    click.echo(f"{'overall':<28} {o['correct']:>4}/{o['total']:<4} {o['accuracy']:.1%}  -> {out_dir}/mcq.json")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="report", show_default=True)
def report(run_dirs, out_dir):
    """report.md with loss curve, metrics side by side, per-subject MCQ accuracy and held-out answers.

    RUN_DIRS are folders like saves/qwen3-8b/lora and saves/qwen3-8b/base (with sft/, predict/, mcq/ inside).
    """
    from caretune.report import write_report

    click.echo(f"wrote {write_report(list(run_dirs), out_dir)}")


if __name__ == "__main__":
    main()
