"""Data preparation commands: convert, check, fetch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import click

from caretune.cli.base import main
from caretune.constants import CUTOFF_LEN, DATA_DIR, DATASET_INFO, DEFAULT_EVAL_SIZE, MAX_EVAL_FRACTION, TEMPLATE


def _input_options() -> list:
    """`caretune convert`'s options on what is read and how it is cleaned."""
    from converters.choices import FILTER_REASONS

    return [
        click.argument("raw", type=click.Path(exists=True, dir_okay=False)),
        click.option(
            "--out",
            type=click.Path(dir_okay=False),
            default=None,
            help="Train output (default: DATA_DIR/<dataset>.json); eval, report and rejects go beside it.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=DATA_DIR,
            show_default=True,
            help="Output folder when --out is not given; datasets already converted here are deduped against.",
        ),
        click.option(
            "--eval-size",
            type=click.IntRange(min=0),
            default=DEFAULT_EVAL_SIZE,
            show_default=True,
            help=f"Rows held out for evaluation (never more than {MAX_EVAL_FRACTION:.0%} of the rows kept).",
        ),
        click.option(
            "--scrub-pii/--no-scrub-pii",
            default=True,
            show_default=True,
            help="Mask phone numbers, ID-card numbers and e-mail addresses in patient text.",
        ),
        click.option(
            "--filters",
            "filter_set",
            type=click.Choice(["all", "none"]),
            default="all",
            show_default=True,
            help="Quality filters and wrapper stripping (converters/quality.py): all, or none for the rows as they come.",
        ),
        click.option(
            "--keep",
            "keep",
            multiple=True,
            type=click.Choice(FILTER_REASONS),
            metavar="REASON",
            help=f"Switch one filter off (repeatable): {', '.join(FILTER_REASONS)}.",
        ),
    ]


def _source_options(source_name: str) -> list:
    """The options a source offers; those it does not are hidden and held at the only value it takes."""
    from importlib import import_module

    from converters.choices import APPEND, CARE_POLICIES, LAYOUTS, OFF, SYSTEM_LAYOUT
    from converters.turns import TRAIN_POLICIES

    module = import_module(f"converters.{source_name}")  # not the pipeline: start-up time
    care_reminders = getattr(module, "CARE_REMINDERS", getattr(module, "MEDICAL", True))
    preference = getattr(module, "PREFERENCE", False)

    def source_option(shown: bool, name: str, choices: tuple, default: str, fixed: str, help_text: str):
        """An option this source offers, or a hidden one held at `fixed` (another value is refused in one line)."""
        if not shown:
            return click.option(name, hidden=True, default=fixed, type=click.Choice(choices))
        return click.option(name, type=click.Choice(choices), default=default, show_default=True, help=help_text)

    care_option = source_option(  # general rows and preference pairs get no care reminders
        care_reminders,
        "--care-reminder",
        CARE_POLICIES,
        APPEND,
        OFF,
        "Answers that do not advise seeing a doctor (or, to an urgent question, emergency care): "
        "append a fixed reminder, drop the row, or keep it as it is (off).",
    )
    layout_option = source_option(  # HuatuoGPT2 and general rows keep the layout they have
        source_name == "chatmed",
        "--layout",
        LAYOUTS,
        SYSTEM_LAYOUT,
        SYSTEM_LAYOUT,
        "system: the medical prompt as the rows' system prompt, as chat and the API send it; "
        "walkthrough: as the alpaca instruction, the question as input.",
    )

    return [
        care_option,
        layout_option,
        click.option(
            "--domain",
            type=click.Choice(["medical", "general"]),
            default="medical",
            show_default=True,
            hidden=not preference,
            help="medical: rows without their own system turn get the medical system prompt (prefs-med); general: they keep "
            "none (prefs-general).",
        ),
        click.option(
            "--train-answers",
            type=click.Choice(TRAIN_POLICIES),
            default=None,
            hidden=preference,  # a pair trains its last answer
            help="Which answers of a multi-turn conversation train, each as a row on the prompt chat serves at that point: "
            "all, or the last (earlier answers are context). Default: all for medical sets, last for general ones "
            "(converters/turns.py, converters/general.py say why).",
        ),
    ]


def _output_options() -> list:
    """`caretune convert`'s options on what is written, registered and shown."""
    return [
        click.option(
            "--cutoff-len",
            type=click.IntRange(min=0),
            default=CUTOFF_LEN - 1,
            show_default=True,
            help="Fit every training row to this many tokens (Qwen3 tokenizer, the recipes' template) by dropping its oldest "
            "whole turns, the system prompt kept; a question and answer longer than it are skipped. The default is the "
            f"recipes' cutoff_len {CUTOFF_LEN} less the token LLaMA-Factory keeps back when packing; 0: no fitting "
            "(LLaMA-Factory then cuts long rows mid-turn, and preflight refuses them).",
        ),
        click.option(
            "--dataset-info",
            type=click.Path(dir_okay=False),
            default=DATASET_INFO,
            show_default=True,
            help="LLaMA-Factory registry to add the outputs to.",
        ),
        click.option("--register/--no-register", default=True, show_default=True, help="Add the outputs to --dataset-info."),
        click.option(
            "--card/--no-card",
            default=True,
            show_default=True,
            help="Write <dataset>.card.md (counts, care shares, token-length histogram, examples) beside the report.",
        ),
        click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal)."),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Processes converting JSON Lines input (default: one per CPU core, at most 4, for inputs of 16 MB or more; "
            "else 1).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a summary line."),
        click.option(
            "--lock-timeout",
            type=click.FloatRange(min=0),
            default=None,
            metavar="SECONDS",
            help="When another conversion holds the same outputs or registry, wait at most this long "
            "(default: wait until it finishes).",
        ),
    ]


def _run_convert(source_name: str, asked: SimpleNamespace) -> None:
    """Convert one raw file as `caretune convert SOURCE` was asked to, and print its summary or report."""
    from caretune.prep.conversion import conversion_options, convert, registry_note, source_for
    from converters.options import HeldOut, RunControls
    from converters.report import summary_line

    converter = source_for(source_name, asked.domain)
    report, outputs, card_note = convert(
        converter,
        asked.raw,
        out=asked.out,
        data_dir=asked.data_dir,
        options=conversion_options(
            converter,
            asked.scrub_pii,
            asked.filter_set,
            asked.keep,
            asked.care_reminder,
            asked.layout,
            asked.train_answers,
            asked.cutoff_len,
        ),
        held_out=HeldOut(asked.eval_size, MAX_EVAL_FRACTION),
        registry_path=asked.dataset_info if asked.register else None,
        card=asked.card,
        controls=RunControls(
            progress=asked.progress,
            workers=asked.workers,
            lock_timeout=asked.lock_timeout,
            log=lambda line: click.echo(f"convert: {line}", err=True),
        ),
    )
    if asked.as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    registered = ""
    if asked.register:
        state = "updated" if report["registry_changed"] else "already up to date"
        registered = f"; registered {outputs.name}, {outputs.eval_name} in {asked.dataset_info} ({state})" + registry_note(
            outputs, asked.dataset_info
        )
    click.echo(summary_line(report) + registered + card_note)


def _convert_command(source_name: str, help_text: str):
    def command(**given):
        _run_convert(source_name, SimpleNamespace(**given))

    command.__doc__ = help_text
    for option in reversed(_input_options() + _source_options(source_name) + _output_options()):
        command = option(command)
    return command


@main.group()
def convert() -> None:
    """Convert raw medical dialogue files (and general instructions to mix in) into registered LLaMA-Factory datasets."""


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
convert.command("general")(
    _convert_command(
        "general",
        """General Chinese instructions, ShareGPT {"conversations":[...]} or alpaca {"instruction","input","output"}
    rows -> sharegpt records (general-zh): filtered, masked, deduped and split like the medical sets, with no care
    reminders and no medical system prompt (converters/general.py says why).

    RAW may be JSON Lines or a JSON array, UTF-8 with or without BOM.""",
    )
)

convert.command("prefs")(
    _convert_command(
        "prefs",
        """Preference pairs, MedicalGPT's {"conversations":[...],"chosen","rejected"} or shibing624/medical's reward
    rows {"question","response_chosen","response_rejected"} -> LLaMA-Factory ranking records for DPO (prefs-med):
    filtered (a failing chosen answer skips the pair; a failing rejected one is counted), masked, deduped by prompt
    and split like the SFT sets; no care reminder is added to either answer (converters/prefs.py says why).

    RAW may be JSON Lines or a JSON array, UTF-8 with or without BOM.""",
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
    from caretune.prep.check import check_datasets, format_results

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
@click.argument("dataset", type=click.Choice(["chatmed", "huatuo", "general", "prefs"]))
@click.option("--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Hub to download from.")
@click.option("--dest", type=click.Path(file_okay=False), default=f"{DATA_DIR}/raw", show_default=True)
def fetch(dataset, source, dest):
    """Download a raw dataset file from Hugging Face or ModelScope into DEST."""
    from caretune.prep.fetch import fetch_raw

    path = fetch_raw(dataset, source, dest)
    click.echo(f"downloaded {path}")
    click.echo(f"next: caretune convert {dataset} {path}")
