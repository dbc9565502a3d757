"""Evaluation commands: eval, mcq, report."""

from __future__ import annotations

from pathlib import Path

import click

from caretune.cli.base import main

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
    from caretune.evaluation.evaluate import evaluate, format_report
    from caretune.recipe import Recipe

    if base:
        recipe = str(Recipe.load(recipe).base_copy().path)
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
    help="Medical suite: CMMLU-style (dev/, test/) or C-Eval-style (dev/, val/) folder of per-subject CSVs; repeatable.",
)
@click.option(
    "--general-source",
    "general_sources",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="General suite: CMMLU's and C-Eval's folders (the suite takes its fixed selection from them); repeatable.",
)
@click.option(
    "--suite",
    type=click.Choice(["medical", "general", "all"]),
    default="medical",
    show_default=True,
    help="medical: every subject of --source; general: the fixed non-medical selection (caretune/evaluation/suites.py).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where mcq.json goes (default: beside the recipe's adapter, mcq/ or mcq-general/).",
)
@click.option("--n-shot", type=click.IntRange(0, 5), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--base", is_flag=True, help=_BASE_HELP)
def mcq(recipe, sources, general_sources, suite, out_dir, n_shot, batch_size, base):
    """Multiple-choice accuracy (5-shot, A-D logits, scored as LLaMA-Factory's evaluator scores), per subject, group
    and overall: the medical suite, the general one (what the medical gain cost), or both, with the model chat serves."""
    from caretune.evaluation.mcq import mcq_target, run_mcq
    from caretune.recipe import RunDir

    suites = ["medical", "general"] if suite == "all" else [suite]
    if "general" in suites and not general_sources:
        raise click.UsageError("the general suite needs --general-source (CMMLU's and C-Eval's folders; not shipped: CC BY-NC-SA)")
    planned = []
    for name in suites:
        given = list(sources) if name == "medical" else list(general_sources)
        target = str(RunDir(Path(out_dir)).mcq(name)) if out_dir and len(suites) > 1 else out_dir
        scored, folder = mcq_target(recipe, target, base, name)
        planned.append((name, given, folder))
    for (name, _, folder), result in zip(planned, run_mcq(scored, planned, n_shot=n_shot, batch_size=batch_size)):
        if missing := result["missing_subjects"]:
            click.echo(
                f"mcq: WARNING: {len(missing)} of the {name} suite's subjects are not in --general-source "
                f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}): give CMMLU's and C-Eval's folders",
                err=True,
            )
        for subject, s in result["subjects"].items():
            click.echo(f"{subject:<28} {s['correct']:>4}/{s['total']:<4} {s['accuracy']:.1%}")
        o = result["overall"]
        click.echo(f"{name + ' overall':<28} {o['correct']:>4}/{o['total']:<4} {o['accuracy']:.1%}  -> {folder}/mcq.json")


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Instead of RUN_DIRS: the base model's run folder and this recipe's, side by side.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="report", show_default=True)
def report(run_dirs, recipe, out_dir):
    """report.md with loss curve, metrics side by side, per-subject MCQ accuracy and held-out answers.

    RUN_DIRS are folders like saves/qwen3-8b/lora and saves/qwen3-8b/base (with sft/, predict/, mcq/ inside).
    """
    from caretune.evaluation.report import write_report

    if bool(run_dirs) == bool(recipe):
        raise click.UsageError("give RUN_DIRS or --recipe RECIPE")
    if recipe:
        from caretune.recipe import Recipe

        tuned = Recipe.load(recipe)
        run_dirs = [str(tuned.base_run_dir.root), str(tuned.run_dir.root)]
        if missing := [run for run in run_dirs if not Path(run).is_dir()]:
            raise click.UsageError(
                f"no run folder {', '.join(missing)} yet: evaluate the model first (make eval runs both, or caretune eval "
                f"{recipe} [--base])"
            )
    click.echo(f"wrote {write_report(list(run_dirs), out_dir)}")


def _judge_options(command):
    """The endpoint options every judge command shares."""
    from caretune.evaluation.grader_prompts import DEFAULT_LANGUAGE, LANGUAGES
    from caretune.evaluation.judge import (
        CACHE_DIR,
        DEFAULT_CONCURRENCY,
        DEFAULT_MAX_TOKENS,
        DEFAULT_RETRIES,
        DEFAULT_TIMEOUT_S,
        KEY_ENV,
    )

    options = [
        click.option(
            "--judge-url", required=True, help=f"OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key: ${KEY_ENV})."
        ),
        click.option("--judge-model", required=True, help="The model name the endpoint serves."),
        click.option(
            "--allow-remote-judge", is_flag=True, help="Allow a judge off this machine (held-out patient questions go there)."
        ),
        click.option("--concurrency", type=click.IntRange(1, 64), default=DEFAULT_CONCURRENCY, show_default=True),
        click.option(
            "--timeout",
            "timeout_s",
            type=click.FloatRange(min=1),
            default=DEFAULT_TIMEOUT_S,
            show_default=True,
            help="Seconds one judge call may take before it is retried.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 20),
            default=DEFAULT_RETRIES,
            show_default=True,
            help="Further tries of a call after 429, 5xx, a timeout or a refused connection, with backoff.",
        ),
        click.option(
            "--judge-max-tokens",
            "max_tokens",
            type=click.IntRange(16, 131072),
            default=DEFAULT_MAX_TOKENS,
            show_default=True,
            help="Tokens the judge may write per verdict (a reasoning judge thinks first; a reply cut there is unparsed).",
        ),
        click.option(
            "--grader-language",
            type=click.Choice(LANGUAGES),
            default=DEFAULT_LANGUAGE,
            show_default=True,
            help="Language of the grader's instructions (HealthBench's grader rules in either).",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False),
            default=str(CACHE_DIR),
            show_default=True,
            help="Where verdicts are cached (a rerun makes no calls).",
        ),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Where judge.json and verdicts.jsonl go (default: beside the run, under judge/).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _open_judge(judge_url, judge_model, allow_remote_judge, concurrency, timeout_s, retries, max_tokens, cache_dir):
    from caretune.evaluation.judge import open_judge

    return open_judge(
        judge_url,
        judge_model,
        allow_remote=allow_remote_judge,
        concurrency=concurrency,
        timeout_s=timeout_s,
        retries=retries,
        max_tokens=max_tokens,
        cache_dir=Path(cache_dir),
        warn=lambda text: click.echo(f"judge: WARNING: {text}", err=True),
    )


def _calls_line(report: dict, out: Path) -> str:
    bad = f", {report['bad_cache_entries']} bad cache entries skipped" if report.get("bad_cache_entries") else ""
    return (
        f"{report['calls']} calls, {report['cached']} cached, {report['unparsed']} unparsed, {report['failed']} failed"
        f"{bad} -> {out / 'judge.json'}"
    )


def _nothing_parsed(report: dict, out: Path) -> None:
    """A run in which not one verdict could be used fails (after its files are written, for a look)."""
    if report["verdicts"] and report["unparsed"] + report["failed"] >= report["verdicts"]:
        raise click.ClickException(
            f"the judge gave no usable verdict ({report['unparsed']} unparsed, {report['failed']} failed of "
            f"{report['verdicts']}); see {out / 'verdicts.jsonl'}"
        )


def _trained_by(recipe) -> dict | None:
    """The training run behind a recipe's adapter (its manifest's path and SHA-256), for judge.json."""
    if recipe is None:
        return None
    from caretune.training.runs import trained_by

    return trained_by(recipe.adapter)


@main.group()
def judge() -> None:
    """Judge answers with a grader model behind an OpenAI-compatible endpoint: rubric, pairwise, calibrate."""


_BACKEND = click.option(
    "--backend",
    type=click.Choice(["huggingface", "vllm"]),
    default="huggingface",
    show_default=True,
    help="LLaMA-Factory engine that generates the answers (greedy).",
)


@judge.command("rubric")
@click.argument("rubrics", type=click.Path(exists=True, dir_okay=False))
@click.option("--answers", type=click.Path(exists=True, dir_okay=False), default=None, help='JSON Lines {"prompt_id", "response"}.')
@click.option(
    "--recipe", type=click.Path(exists=True, dir_okay=False), default=None, help="Generate the answers with this recipe's model."
)
@click.option("--base", is_flag=True, help="With --recipe: the model without its adapter (under saves/<model folder>/base).")
@_BACKEND
@_judge_options
def judge_rubric(rubrics, answers, recipe, base, backend, out_dir, grader_language, **endpoint):
    """Score answers against a HealthBench-format rubric file, one judge call per criterion.

    The shipped Chinese smoke set is caretune/data/rubrics_zh.jsonl (not physician-validated).
    """
    from caretune.evaluation.judge import default_out
    from caretune.evaluation.rubric import load_answers, load_rubrics, run_rubric

    if (answers is None) == (recipe is None):
        raise click.UsageError("give exactly one of --answers FILE and --recipe RECIPE")
    from caretune.recipe import Recipe

    prompts = load_rubrics(rubrics)
    given = load_answers(answers, prompts) if answers else None
    model = Recipe.load(recipe) if recipe else None  # read once
    if model and base:
        model = model.base_copy()
    out = Path(out_dir) if out_dir else default_out(model, Path(answers or "."), Path(rubrics).stem)
    grader = _open_judge(**endpoint)
    if given is None:
        from caretune.evaluation.rubric import generate_answers

        given = generate_answers(model, prompts, backend, out)
    source = answers or f"{model.path} ({backend})"
    report = run_rubric(prompts, given, source, grader, out, _trained_by(model), grader_language)
    interval = f" [{report['ci'][0]:.2f}, {report['ci'][1]:.2f}]" if report["ci"] else ""
    score = f"{report['score']:.3f}{interval}" if report["score"] is not None else "none (nothing scored)"
    skipped = f"; {len(report['skipped'])} prompts skipped (no positive points)" if report["skipped"] else ""
    click.echo(f"rubric: score {score} over {report['n']}/{report['examples']} prompts{skipped}; {_calls_line(report, out)}")
    _nothing_parsed(report, out)


@judge.command("pairwise")
@click.argument("recipes", nargs=-1, type=click.Path(exists=True, dir_okay=False), metavar="[BASE_RECIPE TUNED_RECIPE]")
@click.option(
    "--answers",
    nargs=2,
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="BASE.jsonl TUNED.jsonl",
    help='Judge answers made elsewhere instead: JSON Lines {"prompt_id", "prompt", "response"}, prompt text or chat '
    "messages; the prompts both files answer are judged, the rest listed.",
)
@click.option("--sample", type=click.IntRange(min=1), default=200, show_default=True, help="Held-out questions (chosen by hash).")
@click.option(
    "--general",
    is_flag=True,
    help="Judge the shipped general prompts (writing, reasoning, everyday knowledge) instead: forgetting in free answers.",
)
@_BACKEND
@_judge_options
def judge_pairwise(recipes, answers, sample, general, backend, out_dir, grader_language, **endpoint):
    """Base against tuned on the tuned recipe's held-out questions (or, with --general, the shipped general prompts;
    or, with --answers, answers made elsewhere), each pair judged in both orders."""
    from caretune.evaluation.evaluate import generation_settings, held_out_rows, settings_differences
    from caretune.evaluation.judge import default_out
    from caretune.evaluation.pairwise import BASE, TUNED, answered_elsewhere, general_rows, run_pairwise

    if answers:
        if recipes or general:
            raise click.UsageError("--answers BASE.jsonl TUNED.jsonl replaces the two recipes (and --general)")
        rows, answer, unmatched = answered_elsewhere(*answers)
        out = Path(out_dir) if out_dir else Path("saves") / "judge" / "pairwise-answers"
        report = run_pairwise(
            rows,
            answer,
            dict(zip((BASE, TUNED), answers)),
            _open_judge(**endpoint),
            out,
            sample,
            None,
            grader_language,
            unmatched=unmatched,
        )
        for side, ids in unmatched.items():
            if ids:
                click.echo(
                    f"pairwise: {len(ids)} prompt_id(s) answered on the {side.split('_')[0]} side only: {', '.join(ids[:5])}"
                    + (" …" if len(ids) > 5 else ""),
                    err=True,
                )
        _pairwise_line(report, out)
        return
    if len(recipes) != 2:
        raise click.UsageError("give BASE_RECIPE TUNED_RECIPE, or --answers BASE.jsonl TUNED.jsonl")
    base_recipe, tuned_recipe = recipes
    from caretune.generation.chat_models import generate
    from caretune.recipe import Recipe
    from caretune.training.recipe_checks import check_model_paths

    compared = {BASE: Recipe.load(base_recipe), TUNED: Recipe.load(tuned_recipe)}  # each read once
    for recipe in compared.values():
        check_model_paths(recipe.path, recipe.args)
    settings = [generation_settings(recipe.args, backend) for recipe in compared.values()]
    if differences := settings_differences(*settings):
        raise click.ClickException(
            f"{base_recipe} and {tuned_recipe} would generate differently ({'; '.join(differences)}): "
            "compare the tuned recipe with its base copy (caretune runs base-copy R writes one)"
        )
    tuned, by_path = compared[TUNED], {str(recipe.path): recipe for recipe in compared.values()}
    out = Path(out_dir) if out_dir else default_out(tuned, Path("."), "pairwise-general" if general else "pairwise")
    grader = _open_judge(**endpoint)
    report = run_pairwise(
        general_rows() if general else held_out_rows(tuned),
        lambda path, conversations: generate(by_path[path], conversations, backend),
        {side: str(recipe.path) for side, recipe in compared.items()},
        grader,
        out,
        sample,
        _trained_by(tuned),
        grader_language,
        general,
    )
    _pairwise_line(report, out)


def _pairwise_line(report: dict, out: Path) -> None:
    """The pairwise summary line: shares, the raw and length-controlled rates (or why withheld), lengths, calls."""
    shares, controlled = report["shares"], report["length_controlled"]
    if controlled["win_rate"] is not None:
        low, high = controlled["ci"]
        raw, fitted = controlled["raw_win_rate"], controlled["win_rate"]
        lc = f"; preferred {raw:.0%} raw, {fitted:.0%} length-controlled ({low:.0%}–{high:.0%})"
    elif controlled["raw_win_rate"] is not None:
        lc = f"; preferred {controlled['raw_win_rate']:.0%} raw; length-controlled withheld ({controlled['withheld']})"
    else:
        lc = ""
    click.echo(
        f"pairwise: tuned vs base over {report['judged']}/{report['sample']} {report['questions']}: win {shares['win'] or 0:.0%}, "
        f"tie {shares['tie'] or 0:.0%}, loss {shares['loss'] or 0:.0%}{lc}; mean length base "
        f"{report['mean_answer_chars']['base']}, tuned {report['mean_answer_chars']['tuned']} chars; {_calls_line(report, out)}"
    )
    _nothing_parsed(report, out)


@judge.command("calibrate")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@_judge_options
def judge_calibrate(labels, out_dir, grader_language, **endpoint):
    """Agreement and macro F1 of the judge against physicians' labels: HealthBench's meta-evaluation file as published,
    or caretune's own labels format (caretune/evaluation/calibration.py)."""
    from caretune.evaluation.calibration import load_labels, run_calibration
    from caretune.evaluation.judge import default_out

    rows = load_labels(labels)
    out = Path(out_dir) if out_dir else default_out(None, Path(labels), "calibration")
    report = run_calibration(rows, labels, _open_judge(**endpoint), out, grader_language)
    measured = f"agreement {report['agreement']:.1%}, macro F1 {report['macro_f1']:.3f}" if report["n"] else "nothing parsed"
    among = report["physicians_among_themselves"]
    physicians = f" (physicians among themselves: macro F1 {among['macro_f1']:.3f})" if among else ""
    click.echo(f"calibrate: {measured} over {report['n']} label pairs of {len(rows)} lines{physicians}; {_calls_line(report, out)}")
    _nothing_parsed(report, out)


@main.group()
def prefs() -> None:
    """The preference stage's data: judged pairs of the SFT model's own answers, for DPO (recipes/<model>/dpo.yaml)."""


@prefs.command("build")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--prompts",
    default=None,
    help="Registered dataset whose prompts are answered (default: prefs-med, the prompts `caretune convert prefs` kept "
    "out of every SFT set and held-out split). Held-out prompts are never used.",
)
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Prompts to use (chosen by hash; default: all).")
@click.option("--candidates", type=click.IntRange(min=2, max=16), default=4, show_default=True, help="Answers sampled per prompt.")
@click.option("--temperature", type=click.FloatRange(min=0.05, max=2.0), default=0.8, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Per answer (default: the recipe's, else 1024).")
@click.option("--seed", type=int, default=42, show_default=True, help="Sampling seed (the same seed gives the same answers).")
@click.option(
    "--backend",
    type=click.Choice(["huggingface", "vllm"]),
    default="huggingface",
    show_default=True,
    help="LLaMA-Factory engine that samples the answers.",
)
@_judge_options
def prefs_build(
    recipe, prompts, sample, candidates, temperature, max_new_tokens, seed, backend, out_dir, grader_language, **endpoint
):
    """Sample answers to each prompt from RECIPE's model (its SFT adapter: dpo.yaml), judge every two of them in both
    orders, keep a prompt's pair when one answer wins both, and write and register RECIPE's dataset (prefs-onpolicy)
    with a report beside it. The judge is asked K(K-1) times a prompt; a rerun reuses answers and verdicts."""
    from caretune.constants import MEDICAL_PREFS_DATASET
    from caretune.evaluation.preferences import Sampling, build_pairs, summary_line
    from caretune.recipe import Recipe

    if out_dir:
        raise click.UsageError("--out: prefs build writes the recipe's dataset, where dataset_info.json registers it")
    sampling = Sampling(
        prompts=prompts or MEDICAL_PREFS_DATASET,
        sample=sample,
        candidates=candidates,
        temperature=temperature,
        max_new_tokens=max_new_tokens or int(Recipe.load(recipe).args.get("max_new_tokens", 1024)),
        seed=seed,
    )
    report = build_pairs(
        recipe,
        _open_judge(**endpoint),
        sampling,
        backend=backend,
        language=grader_language,
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(summary_line(report))
