"""`caretune mcq`: 5-shot single-answer A-D questions, scored by comparing the next-token logits of A/B/C/D with
LLaMA-Factory's own evaluator (`llamafactory.eval`), for a suite: medical (every subject of the medical sources) or
general (caretune.evaluation.suites: a fixed stratified selection of non-medical CMMLU and C-Eval questions).

Sources are CMMLU-style (`,Question,A,B,C,D,Answer`, splits dev/test) or C-Eval-style
(`id,question,A,B,C,D,answer[,explanation]`, splits dev/val) folders of per-subject CSVs. They are
rewritten into one task folder the evaluator reads: `<subject>/{train,test}.jsonl` listed as
configs in a README, and a mapping.json. mcq.json records every question's id and whether it was answered right,
so that `caretune report` compares base and tuned question by question.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.evaluation.suites import GENERAL_SUITE, MEDICAL, general_subjects, question_ids, select_questions
from caretune.recipe import Recipe, load_recipe

TASK = "medmcq"  # no "_": LLaMA-Factory splits the task argument as <folder>_<split>
EVAL_SPLITS = ("val", "test")  # C-Eval's archive has a test/ too, without answers: val/ first
CHOICES = ("A", "B", "C", "D")
SHOT_SEED = 42


def mcq_target(recipe: str, out_dir: str | None, base: bool, suite: str = MEDICAL) -> tuple[str, str]:
    """The recipe to score and the folder its results go to: with `base`, the model without its adapter under the
    base run folder; otherwise in the recipe's run folder (caretune.recipe.Recipe.run_dir: its adapter's run)."""
    scored = Recipe.load(recipe)
    if base:
        scored = scored.base_copy()
    return str(scored.path), out_dir or str(scored.run_dir.mcq(suite))


def read_questions(path: Path) -> list[dict]:
    """One CSV of either style -> [{"question", "A".."D", "answer"}]."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = {name.lower(): name for name in reader.fieldnames or []}
        missing = [f for f in ("question", "a", "b", "c", "d", "answer") if f not in fields]
        if missing:
            raise UserError(f"{path}:1: missing column(s) {', '.join(missing)}")
        rows = []
        for number, row in enumerate(reader, start=2):
            answer = row[fields["answer"]].strip().upper()
            if answer not in CHOICES:
                raise UserError(f"{path}:{number}: answer {answer!r} is not one of A-D")
            rows.append(
                {
                    "question": row[fields["question"]].strip(),
                    **{ch: row[fields[ch.lower()]].strip() for ch in CHOICES},
                    "answer": answer,
                }
            )
        return rows


BENCHMARK_BY_SPLIT = {"test": "cmmlu", "val": "ceval"}
LF_CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")


def _suite_subjects(suite: str, benchmark: str) -> dict[str, str] | None:
    """subject -> group of a suite's selection within one benchmark (None: every subject, as for medical)."""
    if suite == MEDICAL:
        return None
    return {subject: group for group, members in GENERAL_SUITE.items() for bench, subject in members if bench == benchmark}


def build_task(sources: list[str | os.PathLike], task_dir: str | os.PathLike, suite: str = MEDICAL) -> dict[str, dict]:
    """Write the task folder from source folders; return {subject: {"name", "category", "source", "answers", "ids"}}.
    For the general suite only its subjects are taken, and of each only its selected questions."""
    root = Path(task_dir) / TASK
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subjects, configs = {}, []
    for source in map(Path, sources):
        eval_dir = next((source / split for split in EVAL_SPLITS if (source / split).is_dir()), None)
        if not (source / "dev").is_dir() or eval_dir is None:
            raise UserError(f"{source}: expected dev/ and test/ (CMMLU) or dev/ and val/ (C-Eval) folders of CSVs")
        wanted = _suite_subjects(suite, BENCHMARK_BY_SPLIT[eval_dir.name])
        for eval_csv in sorted(eval_dir.glob("*.csv")):
            subject = eval_csv.stem.removesuffix(f"_{eval_dir.name}")
            if wanted is not None and subject not in wanted:
                continue
            group, selected_as = (wanted[subject] if wanted is not None else "Other"), subject
            dev_csv = source / "dev" / eval_csv.name.replace(f"_{eval_dir.name}.csv", "_dev.csv")
            if not dev_csv.exists():
                raise UserError(f"{eval_csv}: no matching few-shot file {dev_csv}")
            if subject in subjects:
                subject = f"{source.name}-{subject}"
            folder = root / subject
            folder.mkdir()
            questions = read_questions(eval_csv)
            if wanted is not None:
                questions = [questions[i] for i in select_questions(selected_as, len(questions))]
            for split, rows in (("train", read_questions(dev_csv)), ("test", questions)):
                (folder / f"{split}.jsonl").write_text(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
                )
            subjects[subject] = {
                "name": subject.replace("_", " "),
                "category": group,
                "source": str(eval_csv),
                "answers": [q["answer"] for q in questions],
                "ids": question_ids(subject, questions),
            }
            configs.append(
                f"- config_name: {subject}\n  data_files:\n  - split: train\n    path: {subject}/train.jsonl\n"
                f"  - split: test\n    path: {subject}/test.jsonl"
            )
    if not subjects:
        what = "no CSV files" if suite == MEDICAL else f"none of the {suite} suite's subjects"
        raise UserError(f"{what} found in {', '.join(map(str, sources))}")
    (root / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n", encoding="utf-8")
    # LLaMA-Factory's evaluator totals its own categories only; a group it does not know (China-specific) is "Other" there
    mapping = {
        s: {"name": v["name"], "category": v["category"] if v["category"] in LF_CATEGORIES else "Other"}
        for s, v in subjects.items()
    }
    (root / "mapping.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=2), encoding="utf-8")
    return subjects


def _tally(hits: list[bool]) -> dict:
    return {"correct": sum(hits), "total": len(hits), "accuracy": round(sum(hits) / len(hits), 4) if hits else 0.0}


def score(subjects: dict[str, dict], predictions: dict[str, dict[str, str]]) -> dict:
    """Per-subject, per-group and overall accuracy from the evaluator's predictions, and every question's result
    by id (for paired comparisons)."""
    per_subject, groups, questions = {}, {}, {}
    for subject, info in subjects.items():
        predicted = predictions[subject]
        hits = [predicted[str(i)] == answer for i, answer in enumerate(info["answers"])]
        per_subject[subject] = _tally(hits)
        groups.setdefault(info.get("category", "Other"), []).extend(hits)
        questions.update(zip(info.get("ids") or [f"{subject}:{i}" for i in range(len(hits))], hits))
    every = [hit for hits in groups.values() for hit in hits]
    return {
        "subjects": per_subject,
        "groups": {group: _tally(hits) for group, hits in sorted(groups.items())},
        "overall": _tally(every),
        "questions": questions,
    }


def run_mcq(
    recipe: str, sources: list[str], out_dir: str | os.PathLike, *, n_shot: int = 5, batch_size: int = 4, suite: str = MEDICAL
) -> dict:
    """Build the suite's task, run LLaMA-Factory's evaluator with the recipe's model/adapter/template; write mcq.json."""
    from caretune.training.recipe_checks import check_model_paths

    out_dir = Path(out_dir)
    subjects = build_task(sources, out_dir / "task", suite)
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
        "suite": suite,
        "missing_subjects": sorted(set(general_subjects()) - set(subjects)) if suite != MEDICAL else [],
        "n_shot": n_shot,
        **score(subjects, predictions),
    }
    (out_dir / "mcq.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return result
