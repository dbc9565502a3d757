"""`caretune mcq`: 5-shot single-answer A-D medical questions, scored by comparing the next-token logits
of A/B/C/D with LLaMA-Factory's own evaluator (`llamafactory.eval`).

Sources are CMMLU-style (`,Question,A,B,C,D,Answer`, splits dev/test) or C-Eval-style
(`id,question,A,B,C,D,answer[,explanation]`, splits dev/val) folders of per-subject CSVs. They are
rewritten into one task folder the evaluator reads: `<subject>/{train,test}.jsonl` listed as
configs in a README, and a mapping.json.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from converters.errors import UserError

TASK = "medmcq"  # no "_": LLaMA-Factory splits the task argument as <folder>_<split>
EVAL_SPLITS = ("test", "val")
CHOICES = ("A", "B", "C", "D")
SHOT_SEED = 42


class McqError(UserError):
    """A source folder or question cannot be used; the message names the file and row."""


def mcq_target(recipe: str, out_dir: str | None, base: bool) -> tuple[str, str]:
    """The recipe to score and the folder its results go to: with `base`, the model without its adapter under the
    base run folder; otherwise beside the recipe's adapter (or the base run folder when it has none)."""
    from caretune.training.preflight import load_recipe
    from caretune.training.recipe_writer import base_model_recipe, base_run_dir

    if base:
        run_dir = base_run_dir(recipe)
        return base_model_recipe(recipe, run_dir), out_dir or f"{run_dir}/mcq"
    adapter = load_recipe(recipe).get("adapter_name_or_path") or base_run_dir(recipe)
    return recipe, out_dir or str(Path(adapter).parent / "mcq")


def read_questions(path: Path) -> list[dict]:
    """One CSV of either style -> [{"question", "A".."D", "answer"}]."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = {name.lower(): name for name in reader.fieldnames or []}
        missing = [f for f in ("question", "a", "b", "c", "d", "answer") if f not in fields]
        if missing:
            raise McqError(f"{path}:1: missing column(s) {', '.join(missing)}")
        rows = []
        for number, row in enumerate(reader, start=2):
            answer = row[fields["answer"]].strip().upper()
            if answer not in CHOICES:
                raise McqError(f"{path}:{number}: answer {answer!r} is not one of A-D")
            rows.append(
                {
                    "question": row[fields["question"]].strip(),
                    **{ch: row[fields[ch.lower()]].strip() for ch in CHOICES},
                    "answer": answer,
                }
            )
        return rows


def build_task(sources: list[str | os.PathLike], task_dir: str | os.PathLike) -> dict[str, dict]:
    """Write the task folder from source folders; return {subject: {"name", "source", "questions"}}."""
    root = Path(task_dir) / TASK
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subjects, configs = {}, []
    for source in map(Path, sources):
        eval_dir = next((source / split for split in EVAL_SPLITS if (source / split).is_dir()), None)
        if not (source / "dev").is_dir() or eval_dir is None:
            raise McqError(f"{source}: expected dev/ and test/ (CMMLU) or dev/ and val/ (C-Eval) folders of CSVs")
        for eval_csv in sorted(eval_dir.glob("*.csv")):
            subject = eval_csv.stem.removesuffix(f"_{eval_dir.name}")
            dev_csv = source / "dev" / eval_csv.name.replace(f"_{eval_dir.name}.csv", "_dev.csv")
            if not dev_csv.exists():
                raise McqError(f"{eval_csv}: no matching few-shot file {dev_csv}")
            if subject in subjects:
                subject = f"{source.name}-{subject}"
            folder = root / subject
            folder.mkdir()
            for split, csv_path in (("train", dev_csv), ("test", eval_csv)):
                rows = read_questions(csv_path)
                (folder / f"{split}.jsonl").write_text(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
                )
            questions = read_questions(eval_csv)
            subjects[subject] = {
                "name": subject.replace("_", " "),
                "category": "Other",
                "source": str(eval_csv),
                "answers": [q["answer"] for q in questions],
            }
            configs.append(
                f"- config_name: {subject}\n  data_files:\n  - split: train\n    path: {subject}/train.jsonl\n"
                f"  - split: test\n    path: {subject}/test.jsonl"
            )
    if not subjects:
        raise McqError(f"no CSV files found in {', '.join(map(str, sources))}")
    (root / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n", encoding="utf-8")
    mapping = {s: {"name": v["name"], "category": v["category"]} for s, v in subjects.items()}
    (root / "mapping.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=2), encoding="utf-8")
    return subjects


def score(subjects: dict[str, dict], predictions: dict[str, dict[str, str]]) -> dict:
    """Per-subject and overall accuracy from the evaluator's predictions."""
    per_subject, correct_total, total = {}, 0, 0
    for subject, info in subjects.items():
        predicted = predictions[subject]
        correct = sum(predicted[str(i)] == answer for i, answer in enumerate(info["answers"]))
        per_subject[subject] = {
            "correct": correct,
            "total": len(info["answers"]),
            "accuracy": round(correct / len(info["answers"]), 4),
        }
        correct_total += correct
        total += len(info["answers"])
    return {
        "subjects": per_subject,
        "overall": {"correct": correct_total, "total": total, "accuracy": round(correct_total / total, 4) if total else 0.0},
    }


def run_mcq(recipe: str, sources: list[str], out_dir: str | os.PathLike, *, n_shot: int = 5, batch_size: int = 4) -> dict:
    """Build the task, run LLaMA-Factory's evaluator with the recipe's model/adapter/template; write mcq.json."""
    from caretune.training.preflight import check_model_paths, load_recipe

    out_dir = Path(out_dir)
    subjects = build_task(sources, out_dir / "task")
    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    eval_args = {
        key: args[key]
        for key in ("model_name_or_path", "adapter_name_or_path", "finetuning_type", "template", "trust_remote_code")
        if key in args
    }
    save_dir = out_dir / "evaluator"
    if save_dir.exists():
        shutil.rmtree(save_dir)
    eval_args.update(
        task=f"{TASK}_test", task_dir=str(out_dir / "task"), lang="zh", n_shot=n_shot, batch_size=batch_size, save_dir=str(save_dir)
    )

    from caretune.lf import run_choice_eval

    run_choice_eval(eval_args, SHOT_SEED)  # the same shots every run
    predictions = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    from caretune.training.runs import trained_by

    result = {
        "recipe": recipe,
        "trained_by": trained_by(args.get("adapter_name_or_path")),
        "n_shot": n_shot,
        **score(subjects, predictions),
    }
    (out_dir / "mcq.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return result
