"""`caretune report RUN_DIR...`: one report.md with PNGs a person reads instead of the JSON.

A run folder holds what the recipes write: `sft/trainer_log.jsonl` (training), `predict/safety.json`
and `predict/generated_predictions.jsonl` (`caretune eval`), `mcq/mcq.json` (`caretune mcq`), e.g.
`saves/qwen3-8b/lora` for the tuned model and `saves/qwen3-8b/base` for the base model.
"""

from __future__ import annotations

import json
from pathlib import Path

from caretune.constants import MEDICAL_SYSTEM_PROMPT
from caretune.evaluate import CARE_GOAL, user_text

METRICS = (  # (label, section, key, format)
    ("BLEU-4", "generation", "predict_bleu-4", "{:.2f}"),
    ("ROUGE-1", "generation", "predict_rouge-1", "{:.2f}"),
    ("ROUGE-2", "generation", "predict_rouge-2", "{:.2f}"),
    ("ROUGE-L", "generation", "predict_rouge-l", "{:.2f}"),
    ("advise seeing a doctor", "safety", "advises_care_share", "{:.0%}"),
    ("held-out references advising a doctor", "care.reference", "advises_care_share", "{:.0%}"),
    ("urgent held-out questions: model urges emergency care", "care.model", "urges_emergency_share", "{:.0%}"),
    ("urgent held-out questions: references urge emergency care", "care.reference", "urges_emergency_share", "{:.0%}"),
    ("answers with `<think>`", "safety", "think_blocks", "{}"),
    ("empty answers", "safety", "empty", "{}"),
    ("cut at max_new_tokens", "safety", "cut_at_max_new_tokens", "{}"),
    ("emergency prompts urged to seek care now", "emergency", "urges_emergency_share", "{:.0%}"),
)
EXAMPLES = 3


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def load_run(run_dir: Path) -> dict:
    """One run folder's loss curve, evaluation figures (safety.json), MCQ scores and example answers."""
    log = run_dir / "sft" / "trainer_log.jsonl"
    losses = []
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if "loss" in entry:
                losses.append((entry["current_steps"], entry["loss"]))
    predictions_file = run_dir / "predict" / "generated_predictions.jsonl"
    predictions = (
        [json.loads(line) for line in predictions_file.read_text(encoding="utf-8").splitlines()[:EXAMPLES]]
        if predictions_file.exists()
        else []
    )
    return {
        "name": str(run_dir),
        "losses": losses,
        "eval": _json(run_dir / "predict" / "safety.json"),
        "mcq": _json(run_dir / "mcq" / "mcq.json"),
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


def _cell(run: dict, section: str, key: str, fmt: str) -> str:
    value = run["eval"] or {}
    for part in (*section.split("."), key):
        value = value.get(part) if isinstance(value, dict) else None
    return fmt.format(value) if value is not None else "–"


def render(runs: list[dict], has_loss_png: bool, has_mcq_png: bool) -> str:
    """The report's Markdown."""
    names = [r["name"] for r in runs]
    lines = ["# caretune evaluation report", "", "Runs: " + ", ".join(f"`{n}`" for n in names), ""]
    lines += ["## Training loss", ""]
    lines += ["![training loss](loss.png)" if has_loss_png else "No training log in these runs.", ""]
    lines += ["## Metrics", "", "| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(runs)]
    for label, section, key, fmt in METRICS:
        lines.append(f"| {label} | " + " | ".join(_cell(r, section, key, fmt) for r in runs) + " |")
    mcq_cells = [
        f"{r['mcq']['overall']['accuracy']:.1%} ({r['mcq']['overall']['correct']}/{r['mcq']['overall']['total']})"
        if r["mcq"]
        else "–"
        for r in runs
    ]
    lines += ["| multiple choice, overall | " + " | ".join(mcq_cells) + " |", ""]
    lines += [
        f"Care goal: at least {CARE_GOAL:.0%} of answers advise seeing a doctor; fine-tuning teaches the "
        "references' share, so compare the two rows above.",
        "",
    ]
    missed = [(r["name"], r["eval"]["emergency"]["missed"]) for r in runs if r["eval"] and r["eval"]["emergency"]["missed"]]
    for name, categories in missed:
        lines += [f"Emergency prompts `{name}` did not answer with seek-care-now: {', '.join(categories)}.", ""]
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
    """Write report.md (and loss.png, mcq.png when there is data for them) into out_dir."""
    from converters.writer import AtomicFile

    runs = [load_run(Path(d)) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render(runs, _plot_losses(runs, out / "loss.png"), _plot_mcq(runs, out / "mcq.png"))
    with AtomicFile(out / "report.md") as report:
        report.write(text)
        report.commit()
    return out / "report.md"
