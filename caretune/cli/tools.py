"""The tools beside the pipeline: bench (training throughput) and tiny-model (the CPU stand-in for Qwen3-8B)."""

from __future__ import annotations

from pathlib import Path

import click

from caretune.cli.base import main
from caretune.constants import TINY_MODEL_DIR
from caretune.planning.bench_settings import BenchSettings


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
    metavar="NAME[=SECONDS]",
    help="Run only these, e.g. padding-sdpa, neat-packing-fa2-liger (default: the 8 base variants; unavailable ones "
    "are skipped). Suffixes: -no-gc (no gradient checkpointing, as many packs as the memory model fits on the GPU), "
    "-unsloth-gc, -long-pack (one 8192-token pack), -compile (torch_compile); compile-best compiles the fastest of "
    "the others. =SECONDS: this variant's own --time-budget.",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=BenchSettings.steps, show_default=True, help="Timed steps per variant."
)
@click.option("--warmup", type=click.IntRange(min=1), default=BenchSettings.warmup, show_default=True, help="Untimed steps first.")
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per device for padding variants (default: 24 on a GPU, as the walkthrough; 4 on CPU).",
)
@click.option(
    "--pack-batch",
    type=click.IntRange(min=1),
    default=BenchSettings.pack_batch,
    show_default=True,
    help="Packs of up to --cutoff-len tokens per device for packing variants.",
)
@click.option("--cutoff-len", type=click.IntRange(min=16), default=None, help="Default: 2048 on a GPU, 512 on CPU.")
@click.option(
    "--profile",
    default=BenchSettings.profile,
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
    help="Stop each variant's training after this long and report the steps done, at least one timed (default: no limit; "
    "--variant NAME=SECONDS sets one variant's).",
)
def bench(model, variants, steps, warmup, micro_batch, pack_batch, cutoff_len, profile, work_dir, out, record, time_budget):
    """LoRA training tokens/s, MFU, HFU and peak memory of a Qwen3 shape (random weights) through LLaMA-Factory's
    trainer; each variant's mean loss is compared with the first variant's."""
    from caretune.planning.bench import run_bench
    from caretune.planning.bench_report import append_table, format_report, write_results

    settings = BenchSettings(model, variants, steps, warmup, micro_batch, pack_batch, cutoff_len, profile, time_budget)
    report = run_bench(
        settings,
        Path(work_dir),
        log=lambda line: click.echo(line, err=True),
        on_update=(lambda so_far: write_results(so_far, Path(out))) if out else None,
    )
    table = format_report(report)
    click.echo(table)
    if record:
        append_table(table, Path(record))
    if not any("real_tokens_per_s" in v for v in report["variants"]):
        raise click.ClickException("no variant ran")


@main.command("tiny-model")
@click.argument("directory", type=click.Path(file_okay=False), default=TINY_MODEL_DIR)
def tiny_model(directory):
    """Build a tiny random Qwen3 (the CPU stand-in for Qwen3-8B) with the real Qwen3 tokenizer in DIRECTORY."""
    from caretune.training.tiny_model import build_tiny_model

    path = build_tiny_model(directory)
    click.echo(f"tiny Qwen3 written to {path} (random weights: its answers are noise)")
