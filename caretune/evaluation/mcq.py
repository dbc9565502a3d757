"""`caretune mcq`: 5-shot single-answer A-D questions, scored by comparing the next-token logits of A/B/C/D as
LLaMA-Factory's evaluator does (caretune.lf.ChoiceScorer), for a suite: medical (every subject of the medical sources)
or general (caretune.evaluation.suites: a fixed stratified selection of non-medical CMMLU and C-Eval questions).

Sources are CMMLU-style (`,Question,A,B,C,D,Answer`, splits dev/test) or C-Eval-style
(`id,question,A,B,C,D,answer[,explanation]`, splits dev/val) folders of per-subject CSVs: a subject's dev rows are its
shots, its test (or val) rows its questions. The model is the one chat serves (thinking mode and system prompt
included), loaded once for every suite of a run. mcq.json records every question's id, the letter chosen and whether
it was right, so that `caretune report` compares base and tuned question by question.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.basics.files import write_json_atomic
from caretune.evaluation.suites import GENERAL_SUITE, MEDICAL, general_subjects, question_ids, select_questions
from caretune.recipe import Recipe, load_recipe

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


def _suite_subjects(suite: str, benchmark: str) -> dict[str, str] | None:
    """subject -> group of a suite's selection within one benchmark (None: every subject, as for medical)."""
    if suite == MEDICAL:
        return None
    return {subject: group for group, members in GENERAL_SUITE.items() for bench, subject in members if bench == benchmark}


def read_suite(sources: list[str | os.PathLike], suite: str = MEDICAL) -> dict[str, dict]:
    """A suite's subjects from source folders: {subject: {"name", "category", "source", "shots", "questions",
    "answers", "ids"}}. For the general suite only its subjects are taken, and of each only its selected questions."""
    subjects = {}
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
            if subject in subjects:
                raise UserError(f"{eval_csv}: subject {subject} is given twice; give each source folder once")
            questions = read_questions(eval_csv)
            if wanted is not None:
                questions = [questions[i] for i in select_questions(selected_as, len(questions))]
            subjects[subject] = {
                "name": subject.replace("_", " "),
                "category": group,
                "source": str(eval_csv),
                "shots": read_questions(dev_csv),
                "questions": questions,
                "answers": [q["answer"] for q in questions],
                "ids": question_ids(subject, questions),
            }
    if not subjects:
        what = "no CSV files" if suite == MEDICAL else f"none of the {suite} suite's subjects"
        raise UserError(f"{what} found in {', '.join(map(str, sources))}")
    return subjects


def fixed_shots(rows: list[dict], n_shot: int) -> list[dict]:
    """A subject's few-shot examples: the first `n_shot` of its dev rows after `datasets`' shuffle with SHOT_SEED, as
    LLaMA-Factory's evaluator draws them (it draws without a seed; this one is fixed so every run scores the same
    prompts)."""
    import datasets

    if not rows or n_shot == 0:
        return []
    return list(datasets.Dataset.from_list(rows).shuffle(seed=SHOT_SEED).select(range(min(n_shot, len(rows)))))


def _tally(hits: list[bool]) -> dict:
    return {"correct": sum(hits), "total": len(hits), "accuracy": round(sum(hits) / len(hits), 4) if hits else 0.0}


def score(subjects: dict[str, dict], predictions: dict[str, list[str]]) -> dict:
    """Per-subject, per-group and overall accuracy from the letters chosen, and every question's result by id (for
    paired comparisons)."""
    per_subject, groups, questions = {}, {}, {}
    for subject, info in subjects.items():
        hits = [chosen == answer for chosen, answer in zip(predictions[subject], info["answers"], strict=True)]
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


def choose_answers(scorer, subjects: dict[str, dict], n_shot: int, batch_size: int, progress) -> dict[str, list[str]]:
    """The letter the scorer chooses for every question of every subject, `batch_size` questions a forward pass."""
    chosen = {}
    for subject, info in subjects.items():
        shots = fixed_shots(info["shots"], n_shot)
        prompts = [scorer.prompt_ids(question, shots, info["name"]) for question in info["questions"]]
        chosen[subject] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            chosen[subject] += scorer.choose(batch)
            progress.update(len(batch))
    return chosen


def run_mcq(
    recipe: str, suites: list[tuple[str, list[str], str | os.PathLike]], *, n_shot: int = 5, batch_size: int = 4
) -> list[dict]:
    """Score each (suite, sources, out_dir) with the recipe's model, loaded once; write each suite's mcq.json."""
    from tqdm import tqdm

    from caretune import lf
    from caretune.generation.chat_models import CHAT_KEYS
    from caretune.training.recipe_checks import check_model_paths
    from caretune.training.runs import trained_by

    read = [(suite, read_suite(sources, suite), Path(out_dir)) for suite, sources, out_dir in suites]
    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    scorer = lf.ChoiceScorer({key: args[key] for key in CHAT_KEYS if key in args}, lang="zh")
    results = []
    for suite, subjects, out_dir in read:
        total = sum(len(info["questions"]) for info in subjects.values())
        with tqdm(total=total, desc=f"mcq {suite}", unit="question") as progress:
            chosen = choose_answers(scorer, subjects, n_shot, batch_size, progress)
        result = {
            "recipe": recipe,
            "trained_by": trained_by(args.get("adapter_name_or_path")),
            "suite": suite,
            "missing_subjects": sorted(set(general_subjects()) - set(subjects)) if suite != MEDICAL else [],
            "n_shot": n_shot,
            "prompt": scorer.prompt,
            **score(subjects, chosen),
            "chosen": chosen,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "mcq.json", result)
        results.append(result)
    return results
