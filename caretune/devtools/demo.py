"""`make demo`: the whole pipeline on the shipped sample, on CPU, one line per stage.

Each stage is a `caretune` command run in this process (LLaMA-Factory, torch and the tokenizer are imported once, not
once a stage; `caretune train` still launches its own training process). Each stage's full output (LLaMA-Factory's
warnings, progress bars, its child processes' output) goes to its own log under saves/demo/; the terminal shows what
the stage did, its key figure and where its output is, then a short summary.

    python -m caretune.devtools.demo [--logs saves/demo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from caretune.constants import TRAINER_LOG

SAMPLE = Path("data/sample")
TINY = Path("recipes/tiny-qwen3")
TINY_RUN = Path("saves/tiny-qwen3")
QUESTION = "最近三天低烧，嗓子疼，需要吃抗生素吗？"
MCQ_SOURCES = ("--source", str(SAMPLE / "mcq"), "--general-source", str(SAMPLE / "mcq-general"))
QUIET = {"LLAMAFACTORY_VERBOSITY": "WARN", "TRANSFORMERS_VERBOSITY": "warning", "TOKENIZERS_PARALLELISM": "false"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class StageFailed(Exception):
    """A stage exited non-zero; its log says why."""


@dataclass(frozen=True)
class Stage:
    name: str
    command: list[str]
    describe: Callable[[str], str]  # the stage's stdout -> its one line (key figure and output)


def caretune(*args: str) -> list[str]:
    return ["caretune", *args]


def last_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def describe_convert(stdout: str) -> str:
    report = json.loads(stdout)
    changes = sum(report["changes"].values())
    train = report["outputs"]["train"]
    return (
        f"{report['read']} rows read = {report['written']} train + {report['eval']} held out + {report['duplicates']} "
        f"duplicate + {sum(report['skipped'].values())} skipped; {changes} changed (reminders, wrappers); -> {train}, "
        f"card {train.removesuffix('.json')}.card.md"
    )


def describe_check(stdout: str) -> str:
    results = json.loads(stdout)
    rows = sum(r["rows"] for r in results)
    dropped = sum(r["dropped"] for r in results)
    return f"{len(results)} datasets, {rows:,} rows load through LLaMA-Factory with the Qwen3 tokenizer, {dropped} dropped"


def describe_plan(stdout: str, path: Path) -> str:
    path.write_text(stdout, encoding="utf-8")
    plan = json.loads(stdout)
    hours, rest = divmod(plan["wall_seconds"], 3600)
    return (
        f"Qwen3-8B on {plan['gpus']} x {plan['gpu']} for this sample: {plan['real_tokens_per_epoch']:,} tokens/epoch, "
        f"{plan['optimizer_steps']} steps, ~{hours}h{rest // 60:02d}m; plan in {path}"
    )


def describe_training(_: str) -> str:
    run = TINY_RUN / "lora" / "sft"
    losses = [row["loss"] for row in map(json.loads, (run / TRAINER_LOG).read_text().splitlines()) if "loss" in row]
    curve = run / "training_loss.png"
    return f"{len(losses)} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f} (random weights); adapter and {curve} in {run}"


def describe_eval(side: str) -> str:
    """The evaluation's key figures, read from the safety.json `caretune eval` wrote for one side."""
    folder = TINY_RUN / side / "predict"
    report = read_json(folder / "safety.json")
    metrics, safety = report["generation"], report["safety"]
    shown = ", ".join(f"{k.removeprefix('predict_')} {v:.2f}" for k, v in metrics.items() if "bleu" in k or "rouge-l" in k)
    return (
        f"{safety['answers']} held-out answers: {shown}; {safety['advises_care_share']:.0%} advise a doctor, "
        f"{safety['cut_at_max_new_tokens_share']:.0%} cut at max_new_tokens; {folder}/safety.json"
    )


def describe_mcq(stdout: str) -> str:
    """The two suites' overall lines of `caretune mcq --suite all`, and the letter a random model favours (read from
    the mcq.json each line names)."""
    overall = [line.split() for line in stdout.splitlines() if " overall " in f" {line} "]
    chosen = [letter for words in overall for letters in read_json(Path(words[-1]))["chosen"].values() for letter in letters]
    favourite = max("ABCD", key=chosen.count)
    return (
        "; ".join(" ".join(words[:4]) for words in overall)
        + f" (random weights: it picks {favourite} for {chosen.count(favourite)} of {len(chosen)}, so these follow the answer key)"
    )


def describe_chat(stdout: str) -> str:
    answer = " ".join(stdout.split())
    think = "a <think> block leaked" if "<think>" in answer else "no <think> block"
    return f"answered {QUESTION!r} with {len(answer)} characters (noise from a random model), {think}"


def tiny_cutoff() -> str:
    """The cutoff the tiny recipe trains at (LLaMA-Factory keeps one token back when packing): the demo fits its rows to
    it, so both the tiny run and the Qwen3-8B plan (2047) take them whole."""
    import yaml

    recipe = yaml.safe_load((Path("recipes") / "tiny-qwen3" / "lora_sft.yaml").read_text(encoding="utf-8"))
    return str(int(recipe["cutoff_len"]) - (1 if recipe.get("packing") or recipe.get("neat_packing") else 0))


def stages(logs: Path) -> list[Stage]:
    """The demo's stages in pipeline order."""
    fit = ("--cutoff-len", tiny_cutoff())
    return [
        Stage(
            "convert chatmed",
            caretune("convert", "chatmed", str(SAMPLE / "chatmed_consult_sample.jsonl"), *fit, "--json"),
            describe_convert,
        ),
        Stage(
            "convert huatuo",
            caretune("convert", "huatuo", str(SAMPLE / "huatuo2_sft_sample.json"), *fit, "--json"),
            describe_convert,
        ),
        Stage("check", caretune("check", "--json"), describe_check),
        Stage(
            "plan",
            caretune("plan", "recipes/qwen3-8b/lora_sft.yaml", "--json"),
            lambda out: describe_plan(out, logs / "plan.json"),
        ),
        Stage("tiny model", caretune("tiny-model"), last_line),
        Stage("train", caretune("train", str(TINY / "lora_sft.yaml")), describe_training),
        Stage("eval", caretune("eval", str(TINY / "predict.yaml")), lambda _: describe_eval("lora")),
        Stage("eval base", caretune("eval", str(TINY / "predict.yaml"), "--base"), lambda _: describe_eval("base")),
        Stage("mcq", caretune("mcq", str(TINY / "chat.yaml"), "--suite", "all", *MCQ_SOURCES), describe_mcq),
        Stage("mcq base", caretune("mcq", str(TINY / "chat.yaml"), "--suite", "all", "--base", *MCQ_SOURCES), describe_mcq),
        Stage(
            "report",
            caretune("report", str(TINY_RUN / "base"), str(TINY_RUN / "lora"), "--out", str(TINY_RUN / "report")),
            last_line,
        ),
        Stage("chat", caretune("chat", str(TINY / "chat.yaml"), "--query", QUESTION), describe_chat),
    ]


@contextlib.contextmanager
def output_to(stdout: Path, stderr: Path) -> Iterator[None]:
    """This process's standard output and error (the file descriptors, so child processes and libraries writing to
    them directly are caught too) go to two files while the block runs."""
    import ctypes

    libc = ctypes.CDLL(None)

    def flush() -> None:  # Python's buffers, and C stdio's (native libraries write through them)
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)

    flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                yield
            finally:
                flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_command(args: list[str]) -> int:
    """One `caretune` command in this process; its exit code (a one-line error or a traceback goes to stderr)."""
    import traceback

    import click

    from caretune.cli import main as cli

    argv, sys.argv = sys.argv, ["caretune", *args]  # what a run's manifest records as its command
    try:
        result = cli.main(args=args, prog_name="caretune", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C: the demo stops
        raise KeyboardInterrupt from None
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except Exception:  # noqa: BLE001 (the stage fails with its traceback in its log)
        traceback.print_exc()
        return 1
    finally:
        sys.argv = argv
    return result if isinstance(result, int) else 0


def run_stage(number: int, stage: Stage, logs: Path) -> str:
    """Run one stage with its output in its log; its one line, or StageFailed naming the log."""
    log = logs / f"{number:02d}-{stage.name.replace(' ', '-')}.log"
    started = time.monotonic()
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    with output_to(out, err):
        code = run_command(stage.command[1:])
    stdout, stderr = (path.read_text(encoding="utf-8", errors="replace") for path in (out, err))
    out.unlink()
    err.unlink()
    log.write_text(f"$ {' '.join(stage.command)}\n\n{stdout}\n--- stderr ---\n{stderr}", encoding="utf-8")
    if code != 0:
        raise StageFailed(f"{stage.name} failed (exit {code}): {last_line(stderr)}; full output in {log}")
    return f"[{number}] {stage.name:<15} {time.monotonic() - started:5.1f}s  {stage.describe(stdout)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=Path("saves/demo"), help="where each stage's full output goes")
    logs = parser.parse_args().logs
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.update({**OFFLINE, **QUIET})  # before any library reads them
    shutil.rmtree(TINY_RUN, ignore_errors=True)  # the demo's own scratch run; nothing else is touched
    print(f"demo: the CPU pipeline on the shipped sample; each stage's full output in {logs}/", flush=True)
    try:
        for number, stage in enumerate(stages(logs), start=1):
            print(run_stage(number, stage, logs), flush=True)
    except StageFailed as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    print(
        "\ndemo: done. Look at:\n"
        "  data card    data/multi-med.card.md, data/huatuo2-sft.card.md\n"
        f"  plan         {logs}/plan.json (caretune plan recipes/qwen3-8b/lora_sft.yaml prints it as a table)\n"
        f"  loss curve   {TINY_RUN}/lora/sft/training_loss.png\n"
        f"  report       {TINY_RUN}/report/report.md\n"
        "next, on 4 GPUs: make train   (recipes/qwen3-8b/lora_sft.yaml: Qwen3-8B LoRA with DeepSpeed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
