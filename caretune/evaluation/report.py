"""`caretune report RUN_DIR...`: one report.md with PNGs a person reads instead of the JSON.

A run folder holds what the recipes write: `sft/trainer_log.jsonl` (training), `predict/safety.json`
and `predict/generated_predictions.jsonl` (`caretune eval`), `mcq/mcq.json` (`caretune mcq`) and
`judge/<set>/judge.json` (`caretune judge`), e.g. `saves/qwen3-8b/lora` for the tuned model and
`saves/qwen3-8b/base` for the base model.
"""

from __future__ import annotations

import json
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.constants import MEDICAL_SYSTEM_PROMPT, PREDICTIONS_FILE, TRAINER_LOG
from caretune.evaluation.evaluate import CARE_GOAL, settings_differences, user_text
from caretune.evaluation.suites import GENERAL, MEDICAL
from caretune.recipe import RunDir

METRICS = (  # (label, section, key, format)
    ("BLEU-4", "generation", "predict_bleu-4", "{:.2f}"),
    ("ROUGE-1", "generation", "predict_rouge-1", "{:.2f}"),
    ("ROUGE-2", "generation", "predict_rouge-2", "{:.2f}"),
    ("ROUGE-L", "generation", "predict_rouge-l", "{:.2f}"),
    ("advise seeing a doctor", "safety", "advises_care_share", "{:.0%}"),
    ("advise seeing a doctor beyond the verbatim reminder", "safety", "advises_care_beyond_reminder_share", "{:.0%}"),
    ("answers whose only care advice is the reminder", "safety", "care_only_through_reminder", "{}"),
    ("held-out references advising a doctor", "care.reference", "advises_care_share", "{:.0%}"),
    (
        "held-out references advising a doctor before reminders were added",
        "care.reference",
        "advises_care_beyond_reminder_share",
        "{:.0%}",
    ),
    ("urgent held-out questions: model urges emergency care", "care.model", "urges_emergency_share", "{:.0%}"),
    ("urgent held-out questions: references urge emergency care", "care.reference", "urges_emergency_share", "{:.0%}"),
    ("answers with `<think>`", "safety", "think_blocks", "{}"),
    ("share of answers with leftover `<think>` text", "safety", "think_blocks_share", "{:.0%}"),
    ("empty answers", "safety", "empty", "{}"),
    ("cut at max_new_tokens", "safety", "cut_at_max_new_tokens", "{}"),
    ("share of answers cut at max_new_tokens", "safety", "cut_at_max_new_tokens_share", "{:.0%}"),
    ("emergency prompts urged to seek care now", "emergency", "urges_emergency_share", "{:.0%}"),
)
EXAMPLES = 3


def check_comparable(runs: list[dict]) -> None:
    """Runs whose answers were generated with different settings (template, system prompt, sampling,
    max_new_tokens, backend, held-out sets), or whose multiple-choice prompts differ (shots, template, thinking mode,
    system prompt), are not compared: a UserError names the differences."""
    _refuse_differences(
        [(run["name"], run["eval"].get("settings") or None) for run in runs if run["eval"]],
        unrecorded=("generation settings", "evaluated", "caretune eval"),
        done="were generated",
        fix="evaluate both with the same recipe settings (caretune eval RECIPE and caretune eval RECIPE --base)",
    )
    for suite, key in SUITES:
        _refuse_differences(
            [(run["name"], _mcq_prompt(run[key])) for run in runs if run[key]],
            unrecorded=(f"{suite} multiple-choice prompt settings", "scored", f"caretune mcq --suite {suite}"),
            done=f"were scored on the {suite} suite",
            fix=f"score both with the same recipe and --n-shot (caretune mcq RECIPE --suite {suite}, then again with --base)",
        )


def _mcq_prompt(result: dict) -> dict | None:
    """What shapes a suite's prompts: the shots and the recipe's template, thinking mode and system prompt."""
    prompt = result.get("prompt")
    return {"n_shot": result.get("n_shot"), **prompt} if isinstance(prompt, dict) and prompt else None


def _refuse_differences(found: list[tuple[str, dict | None]], *, unrecorded: tuple[str, str, str], done: str, fix: str) -> None:
    """`found`: (run, its recorded settings or None) for each run that has the result; a UserError unless all agree.
    `unrecorded`: what is recorded, how it was made and by which command, for a run that recorded none."""
    missing = [name for name, settings in found if settings is None]
    recorded = [(name, settings) for name, settings in found if settings is not None]
    if missing and recorded:
        what, made, command = unrecorded
        they, them = ("it", "it") if len(missing) == 1 else ("they", "them")
        raise UserError(
            f"{', '.join(missing)} recorded no {what} ({made} before caretune recorded them), so {they} cannot be "
            f"checked against {recorded[0][0]}: run {command} on {them} again"
        )
    for name, settings in recorded[1:]:
        if differences := settings_differences(recorded[0][1], settings):
            raise UserError(f"{recorded[0][0]} and {name} {done} with different settings ({'; '.join(differences)}): {fix}")


def render_settings(runs: list[dict]) -> list[str]:
    """Each run's generation settings side by side (runs evaluated before they were recorded say so)."""
    recorded = [(run["eval"] or {}).get("settings") for run in runs]
    if not any(recorded):
        evaluated = any(run["eval"] for run in runs)
        return ["Generation settings were not recorded for these runs: the comparison below is unchecked.", ""] if evaluated else []
    keys = list(next(s for s in recorded if s))
    lines = ["## Generation settings", "", "| setting | " + " | ".join(r["name"] for r in runs) + " |"]
    lines.append("| --- |" + " --- |" * len(runs))
    for key in keys:
        cells = [
            "not recorded" if s is None else "–" if s.get(key) is None else str(s[key]).replace("|", "\\|")[:60] for s in recorded
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*lines, "", "– means unused (sampling keys under greedy decoding); the runs compared here share every setting.", ""]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def load_run(run_dir: Path) -> dict:
    """One run folder's loss curve, evaluation figures (safety.json), MCQ scores and example answers. The training
    folder itself (`.../lora/sft`, as `caretune runs` lists it) stands for its parent."""
    run = RunDir.holding(run_dir)
    log = run.train / TRAINER_LOG
    losses = []
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if "loss" in entry:
                losses.append((entry["current_steps"], entry["loss"]))
    predictions_file = run.predict / PREDICTIONS_FILE
    predictions = (
        [json.loads(line) for line in predictions_file.read_text(encoding="utf-8").splitlines()[:EXAMPLES]]
        if predictions_file.exists()
        else []
    )
    return {
        "name": str(run.root),
        "judged": {folder.name: _json(folder / "judge.json") for folder in run.judged_sets()},
        "losses": losses,
        "eval": _json(run.predict / "safety.json"),
        "mcq": _json(run.mcq(MEDICAL) / "mcq.json"),
        "mcq_general": _json(run.mcq(GENERAL) / "mcq.json"),
        "examples": predictions,
    }


def _plot_losses(runs: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in runs if r["losses"]]
    if not trained:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in trained:
        steps, values = zip(*run["losses"])
        ax.plot(steps, values, label=run["name"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _plot_mcq(runs: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in runs if r["mcq"]]
    if not scored:
        return False
    subjects = sorted({s for r in scored for s in r["mcq"]["subjects"]})
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(max(6, len(subjects) * 0.9), 4))
    for i, run in enumerate(scored):
        values = [100 * run["mcq"]["subjects"].get(s, {}).get("accuracy", 0) for s in subjects]
        ax.bar([x + i * width for x in range(len(subjects))], values, width, label=run["name"])
    ax.set_xticks([x + width * (len(scored) - 1) / 2 for x in range(len(subjects))])
    ax.set_xticklabels(subjects, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(25, color="grey", linestyle=":", linewidth=1)  # chance level for A-D
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


SUITES = (("medical", "mcq"), ("general", "mcq_general"))


def tradeoff(runs: list[dict]) -> list[tuple[str, str, dict]]:
    """(run, suite, paired comparison with the first run) for every later run and suite both answered question by
    question (the first run given is the reference: the base model in `report BASE TUNED`)."""
    from caretune.evaluation.stats import paired_accuracy

    found = []
    for run in runs[1:]:
        for suite, key in SUITES:
            first, other = runs[0][key], run[key]
            if first and other and first.get("questions") and other.get("questions"):
                if (comparison := paired_accuracy(first["questions"], other["questions"])) is not None:
                    found.append((run["name"], suite, comparison))
    return found


def render_tradeoff(runs: list[dict], has_png: bool) -> list[str]:
    """Medical gain beside general cost: accuracy per suite, the paired change and its one-line verdict."""

    compared = tradeoff(runs)
    if not compared:
        return []
    lines = ["## Medical gain and general cost", ""]
    if has_png:
        lines += ["![medical and general accuracy](tradeoff.png)", ""]
    lines += [
        f"Against `{runs[0]['name']}`, question by question (McNemar's exact test on the questions one model answered "
        "right and the other wrong; beyond the noise means p < 0.05):",
        "",
        "| run | suite | questions | reference | this run | change | gained | lost | p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, suite, c in compared:
        lines.append(
            f"| {name} | {suite} | {c['questions']} | {c['reference_accuracy']:.1%} | {c['accuracy']:.1%} | "
            f"{c['change_points']:+.1f} | {c['gained']} | {c['lost']} | {c['p_value']:.3g} |"
        )
    lines.append("")
    lines += [f"- `{name}`, {accuracy_verdict(suite, c)}." for name, suite, c in compared]
    return [*lines, ""]


def _plot_tradeoff(runs: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in runs if any(r[key] for _, key in SUITES)]
    if len(scored) < 2 or not tradeoff(runs):
        return False
    suites = [(suite, key) for suite, key in SUITES if any(r[key] for r in scored)]
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, run in enumerate(scored):
        values = [100 * run[key]["overall"]["accuracy"] if run[key] else float("nan") for _, key in suites]  # no bar
        ax.bar([x + i * width for x in range(len(suites))], values, width, label=run["name"])
    ax.set_xticks([x + width * (len(scored) - 1) / 2 for x in range(len(suites))])
    ax.set_xticklabels([suite for suite, _ in suites])
    ax.set_ylabel("multiple-choice accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(25, color="grey", linestyle=":", linewidth=1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _trained_by(run: dict) -> dict | None:
    """The training manifest an evaluation of this run recorded (eval, mcq or judge)."""
    sources = [run["eval"], run["mcq"], *run["judged"].values()]
    return next((source["trained_by"] for source in sources if source and source.get("trained_by")), None)


def _rubric_sets(runs: list[dict]) -> list[str]:
    return sorted({name for r in runs for name, j in r["judged"].items() if j and j.get("mode") == "rubric"})


def _plot_judged(runs: list[dict], path: Path) -> bool:
    """Per-tag rubric scores of each run side by side, with their 95% intervals (the first rubric set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = _rubric_sets(runs)
    if not sets:
        return False
    scored = [(r["name"], r["judged"][sets[0]]) for r in runs if sets[0] in r["judged"]]
    tags = ["overall", *sorted({t for _, j in scored for t in j["by_tag"]})]
    height = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.5 * len(tags) * len(scored) + 1.5)))
    for i, (name, judged) in enumerate(scored):
        figures = [judged if tag == "overall" else judged["by_tag"].get(tag, {}) for tag in tags]
        values = [f.get("score") or 0.0 for f in figures]
        errors = [
            [v - f["ci"][0] if f.get("ci") else 0 for v, f in zip(values, figures)],
            [f["ci"][1] - v if f.get("ci") else 0 for v, f in zip(values, figures)],
        ]
        ax.barh([y + i * height for y in range(len(tags))], values, height, xerr=errors, capsize=3, label=name)
    ax.set_yticks([y + height * (len(scored) - 1) / 2 for y in range(len(tags))])
    ax.set_yticklabels(tags)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"rubric score ({sets[0]}; 95% bootstrap interval)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _score_cell(figures: dict | None) -> str:
    if not figures or figures.get("score") is None:
        return "–"
    interval = f" [{figures['ci'][0]:.2f}, {figures['ci'][1]:.2f}]" if figures.get("ci") else ""
    return f"{figures['score']:.2f}{interval} (n={figures['n']})"


def render_judged(runs: list[dict], has_png: bool) -> list[str]:
    """The judged section: rubric scores per set and tag, and the pairwise verdicts."""
    names = [r["name"] for r in runs]
    lines = ["## Judged", ""]
    sets = _rubric_sets(runs)
    if has_png:
        lines += ["![rubric scores per tag](judge.png)", ""]
    for name in sets:
        judged = [r["judged"].get(name) for r in runs]
        judges = sorted({j["judge"]["model"] for j in judged if j})
        lines += [f"Rubric set `{name}`, judged by {', '.join(judges)}:", ""]
        lines += ["| score | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(runs)]
        lines.append("| overall | " + " | ".join(_score_cell(j) for j in judged) + " |")
        for tag in sorted({t for j in judged if j for t in j["by_tag"]}):
            lines.append(f"| {tag} | " + " | ".join(_score_cell(j["by_tag"].get(tag) if j else None) for j in judged) + " |")
        unparsed = [f"`{n}` {j['unparsed']}" for n, j in zip(names, judged) if j and j["unparsed"]]
        lines += ["", f"Unparsed verdicts (their prompts left out): {', '.join(unparsed)}." if unparsed else "", ""]
    pairs = [pair for run in runs for name in ("pairwise", "pairwise-general") if (pair := run["judged"].get(name))]
    for pair in pairs:
        if pair.get("mode") != "pairwise":
            continue
        shares, ci = pair["shares"], pair["ci"]

        def share(name: str) -> str:
            if shares[name] is None:
                return "–"
            return f"{shares[name]:.0%} [{ci[name][0]:.0%}, {ci[name][1]:.0%}]"

        lines += [
            f"Pairwise, `{pair['tuned']}` against `{pair['base']}` on {pair['judged']} of {pair['sample']} "
            f"{pair.get('questions', 'held-out medical questions')}, each judged in both orders by {pair['judge']['model']} "
            "(disagreement = tie): "
            f"win {share('win')}, tie {share('tie')}, loss {share('loss')}; mean answer length base "
            f"{pair['mean_answer_chars']['base']}, tuned {pair['mean_answer_chars']['tuned']} characters "
            "(judges favour longer answers).",
            "",
        ]
        controlled = pair.get("length_controlled") or {}
        if controlled.get("raw_win_rate") is not None:
            matched = controlled["length_matched"]
            matched_text = (
                f"; over the {matched['judged']} pairs within 10% of each other's length: win {matched['shares']['win']:.0%}, "
                f"tie {matched['shares']['tie']:.0%}, loss {matched['shares']['loss']:.0%}"
                if matched and matched["judged"]
                else "; no pair within 10% of each other's length"
            )
            interval = _ci(controlled.get("raw_ci"))
            raw = f"the tuned answer is preferred {controlled['raw_win_rate']:.0%} of the time (ties as half{interval})"
            if controlled.get("win_rate") is not None:
                fitted = (
                    f"{controlled['win_rate']:.0%} at equal length{_ci(controlled.get('ci'))} by AlpacaEval 2's length "
                    "term fitted on this comparison"
                )
            else:
                fitted = f"the rate at equal length is withheld: {controlled.get('withheld')}"
            lines += [f"Length-controlled: {raw}; {fitted}{matched_text}.", ""]
    if len(lines) == 2:
        lines += ["No judged results in these runs (`caretune judge`).", ""]
    return lines


def _ci(interval: list | None) -> str:
    return f", 95% interval {interval[0]:.0%}–{interval[1]:.0%}" if interval else ""


def _cell(run: dict, section: str, key: str, fmt: str) -> str:
    value = run["eval"] or {}
    for part in (*section.split("."), key):
        value = value.get(part) if isinstance(value, dict) else None
    return fmt.format(value) if value is not None else "–"


def render(
    runs: list[dict], has_loss_png: bool, has_mcq_png: bool, has_judge_png: bool = False, has_tradeoff_png: bool = False
) -> str:
    """The report's Markdown."""
    names = [r["name"] for r in runs]
    lines = ["# caretune evaluation report", "", "Runs: " + ", ".join(f"`{n}`" for n in names), ""]
    traced = [(r["name"], t) for r in runs if (t := _trained_by(r))]
    for name, trace in traced:
        lines += [f"`{name}` was trained by the run whose manifest is `{trace['manifest']}` (SHA-256 {trace['sha256'][:16]}…).", ""]
    lines += render_settings(runs)
    lines += ["## Training loss", ""]
    lines += ["![training loss](loss.png)" if has_loss_png else "No training log in these runs.", ""]
    lines += ["## Metrics", "", "| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(runs)]
    for label, section, key, fmt in METRICS:
        lines.append(f"| {label} | " + " | ".join(_cell(r, section, key, fmt) for r in runs) + " |")

    def accuracy_cell(scored: dict | None) -> str:
        overall = (scored or {}).get("overall")
        return f"{overall['accuracy']:.1%} ({overall['correct']}/{overall['total']})" if overall else "–"

    mcq_cells = [accuracy_cell(r["mcq"]) for r in runs]
    general_cells = [accuracy_cell(r["mcq_general"]) for r in runs]
    lines += [
        "| multiple choice, overall | " + " | ".join(mcq_cells) + " |",
        "| multiple choice, general suite | " + " | ".join(general_cells) + " |",
        "",
    ]
    lines += [
        f"Care goal: at least {CARE_GOAL:.0%} of answers advise seeing a doctor; fine-tuning teaches the "
        "references' share, so compare the two rows above.",
        "",
    ]
    missed = [(r["name"], r["eval"]["emergency"]["missed"]) for r in runs if r["eval"] and r["eval"]["emergency"]["missed"]]
    for name, categories in missed:
        lines += [f"Emergency prompts `{name}` did not answer with seek-care-now: {', '.join(categories)}.", ""]
    lines += render_tradeoff(runs, has_tradeoff_png)
    lines += render_judged(runs, has_judge_png)
    lines += ["", "## Multiple choice per subject", ""]
    if has_mcq_png:
        subjects = sorted({s for r in runs if r["mcq"] for s in r["mcq"]["subjects"]})
        lines += [
            "![multiple-choice accuracy](mcq.png)",
            "",
            "| subject | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(runs),
        ]
        for subject in subjects:
            cells = [
                f"{r['mcq']['subjects'][subject]['accuracy']:.1%}" if r["mcq"] and subject in r["mcq"]["subjects"] else "–"
                for r in runs
            ]
            lines.append(f"| {subject} | " + " | ".join(cells) + " |")
    else:
        lines.append("No multiple-choice results in these runs.")
    lines += ["", "## Held-out answers", ""]
    for run in runs:
        for i, example in enumerate(run["examples"], start=1):
            prompt = user_text(example["prompt"]).replace(MEDICAL_SYSTEM_PROMPT, "").strip()  # walkthrough layout
            lines += [
                f"**{run['name']} #{i}** — {prompt[:200]}",
                "",
                f"> model: {example['predict'].strip()[:400]}",
                ">",
                f"> reference: {example['label'].strip()[:400]}",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dirs: list[str], out_dir: str) -> Path:
    """Write report.md (and loss.png, mcq.png, judge.png when there is data for them) into out_dir."""
    from caretune.basics.files import AtomicFile

    runs = [load_run(Path(d)) for d in run_dirs]
    check_comparable(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render(
        runs,
        _plot_losses(runs, out / "loss.png"),
        _plot_mcq(runs, out / "mcq.png"),
        _plot_judged(runs, out / "judge.png"),
        _plot_tradeoff(runs, out / "tradeoff.png"),
    )
    with AtomicFile(out / "report.md") as report:
        report.write(text)
        report.commit()
    return out / "report.md"


def accuracy_verdict(suite: str, comparison: dict) -> str:
    """One line: did the suite's accuracy move beyond the noise, and which way."""
    figures = (
        f"{comparison['accuracy']:.1%} against {comparison['reference_accuracy']:.1%} "
        f"({comparison['change_points']:+.1f} points; {comparison['gained']} gained, {comparison['lost']} lost "
        f"of {comparison['questions']} questions; McNemar p = {comparison['p_value']:.3g})"
    )
    if not comparison["beyond_noise"]:
        return f"{suite}: {figures}: no change beyond the noise"
    direction = "rose" if comparison["change_points"] > 0 else "dropped"
    return f"{suite}: {figures}: {direction} beyond the noise"
