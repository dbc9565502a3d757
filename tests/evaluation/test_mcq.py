"""Multiple-choice benchmark: suites from CMMLU- and C-Eval-style CSVs, accuracy by hand, and the scoring against
LLaMA-Factory's own evaluator."""

import csv
import json

import pytest

from caretune.basics.errors import UserError
from caretune.evaluation.mcq import read_questions, read_suite
from tests.helpers import ROOT, SHARED_DATA, tiny_recipe

SAMPLE_MCQ = ROOT / "data" / "sample" / "mcq"


def test_read_suite_from_the_sample(tmp_path):
    subjects = read_suite([SAMPLE_MCQ])
    assert set(subjects) == {"first_aid", "pharmacology"}
    first_aid = subjects["first_aid"]
    assert first_aid["answers"] == ["C", "B", "A", "B", "B", "B"] and first_aid["category"] == "Other"
    assert len(first_aid["questions"]) == len(first_aid["ids"]) == 6 and first_aid["name"] == "first aid"
    assert set(first_aid["shots"][0]) == {"question", "A", "B", "C", "D", "answer"}


def test_the_shots_are_a_seeded_draw_of_the_dev_rows():
    from caretune.evaluation.mcq import fixed_shots

    rows = [{"question": f"q{i}", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "A"} for i in range(9)]
    shots = fixed_shots(rows, 5)
    assert len(shots) == 5 and shots == fixed_shots(rows, 5) and shots != rows[:5]
    assert all(shot in rows for shot in shots) and len({shot["question"] for shot in shots}) == 5
    assert fixed_shots(rows[:3], 5) == fixed_shots(rows[:3], 3) and fixed_shots(rows, 0) == []


def test_ceval_style_folder(tmp_path):
    source = tmp_path / "ceval"
    for split, rows in (("dev", 2), ("val", 3)):
        (source / split).mkdir(parents=True)
        with open(source / split / f"physician_{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
            for i in range(rows):
                writer.writerow([i, f"问题{i}", "甲", "乙", "丙", "丁", "ABCD"[i], "解析"])
    subjects = read_suite([source])
    assert subjects["physician"]["answers"] == ["A", "B", "C"]


def test_a_subject_given_twice_is_refused(tmp_path):
    import shutil

    for name in ("one", "two"):
        shutil.copytree(SAMPLE_MCQ, tmp_path / name / "mcq")
    with pytest.raises(UserError, match="subject mcq-first_aid is given twice"):
        read_suite([tmp_path / "one" / "mcq", tmp_path / "two" / "mcq", tmp_path / "one" / "mcq"])


def test_bad_answer_names_file_and_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"x\.csv:3: answer 'E' is not one of A-D"):
        read_questions(path)
    with pytest.raises(UserError, match="expected dev/ and test/"):
        read_suite([tmp_path])


def test_real_cmmlu_and_ceval_folders_build(tmp_path):
    cmmlu, ceval = SHARED_DATA / "eval" / "cmmlu-medical", SHARED_DATA / "eval" / "ceval-medical"
    if not cmmlu.exists() or not ceval.exists():
        pytest.skip("../shared/data/eval not present")
    subjects = read_suite([cmmlu, ceval])
    assert len(subjects) == 13 and sum(len(s["answers"]) for s in subjects.values()) == 1941 + 19 + 22 + 49


@pytest.mark.lf
@pytest.mark.slow
def test_accuracy_equals_a_hand_count(tmp_path):
    from caretune.evaluation.mcq import run_mcq

    recipe = tiny_recipe(tmp_path, "chat")

    [result] = run_mcq(str(recipe), [("medical", [str(SAMPLE_MCQ)], tmp_path / "run")])
    assert json.loads((tmp_path / "run" / "mcq.json").read_text(encoding="utf-8")) == result
    assert result["prompt"]["enable_thinking"] is False and result["prompt"]["default_system"]  # as chat serves it
    by_hand = 0
    for subject in ("first_aid", "pharmacology"):
        with open(SAMPLE_MCQ / "test" / f"{subject}.csv", encoding="utf-8") as f:
            answers = [row["Answer"] for row in csv.DictReader(f)]
        assert len(result["chosen"][subject]) == len(answers) and set(result["chosen"][subject]) <= set("ABCD")
        hits = sum(chosen == answer for chosen, answer in zip(result["chosen"][subject], answers))
        assert result["subjects"][subject]["correct"] == hits
        by_hand += hits
    assert result["overall"] == {"correct": by_hand, "total": 12, "accuracy": round(by_hand / 12, 4)}
    [again] = run_mcq(str(recipe), [("medical", [str(SAMPLE_MCQ)], tmp_path / "run")])
    assert again == result  # seeded few-shot selection: the same prompts every run


@pytest.mark.lf
@pytest.mark.slow
def test_the_scorer_chooses_what_llamafactorys_evaluator_chooses_in_the_served_prompt(tmp_path, monkeypatch):
    """The same letters as LLaMA-Factory's Evaluator given the same model, template, thinking mode and system prompt
    (its unseeded shot draw seeded here, in the test only); and the prompt is the one chat serves: the recipe's system
    prompt, and in non-thinking mode the empty think block before the answer."""
    import functools

    import datasets
    import torch
    from llamafactory.eval.evaluator import Evaluator

    from caretune import lf
    from caretune.evaluation.mcq import SHOT_SEED, choose_answers, fixed_shots
    from caretune.generation.chat_models import CHAT_KEYS
    from caretune.recipe import load_recipe

    args = load_recipe(str(tiny_recipe(tmp_path, "chat")))
    served = {key: args[key] for key in CHAT_KEYS if key in args}
    assert served["enable_thinking"] is False and served["default_system"]
    subjects = read_suite([SAMPLE_MCQ])
    scorer = lf.ChoiceScorer(served)

    first_aid = subjects["first_aid"]
    prompt = scorer.tokenizer.decode(scorer.prompt_ids(first_aid["questions"][0], fixed_shots(first_aid["shots"], 5), "first aid"))
    assert prompt.startswith(f"<|im_start|>system\n{served['default_system']}<|im_end|>")
    assert prompt.endswith("答案：<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")

    class Counting:
        def update(self, n):
            self.n = getattr(self, "n", 0) + n

    progress = Counting()
    ours = choose_answers(scorer, subjects, n_shot=5, batch_size=4, progress=progress)
    assert progress.n == 12
    prompts = [
        scorer.prompt_ids(q, fixed_shots(first_aid["shots"], n), "first aid") for n, q in enumerate(first_aid["questions"][:4])
    ]
    assert len({len(ids) for ids in prompts}) == 4  # four lengths in one right-padded batch
    batch = scorer.tokenizer.pad([{"input_ids": ids} for ids in prompts], return_tensors="pt")
    full = scorer.model(**batch).logits.detach()  # every position, as LLaMA-Factory's evaluator computes them
    at_last = full[range(4), [len(ids) - 1 for ids in prompts]][:, scorer.choice_ids]
    assert torch.allclose(scorer.choice_logits(prompts), at_last, atol=1e-5)
    our_prompts = [
        scorer.prompt_ids(q, fixed_shots(info["shots"], 5), info["name"]) for info in subjects.values() for q in info["questions"]
    ]

    task = tmp_path / "task" / "medmcq"
    for subject, info in subjects.items():
        (task / subject).mkdir(parents=True)
        for split, rows in (("train", info["shots"]), ("test", info["questions"])):
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            (task / subject / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    splits = "  - split: {0}\n    path: {1}/{0}.jsonl\n"
    configs = "".join(f"- config_name: {s}\n  data_files:\n{splits.format('train', s)}{splits.format('test', s)}" for s in subjects)
    (task / "README.md").write_text(f"---\nconfigs:\n{configs}---\n", encoding="utf-8")
    mapping = {s: {"name": info["name"], "category": "Other"} for s, info in subjects.items()}
    (task / "mapping.json").write_text(json.dumps(mapping), encoding="utf-8")
    monkeypatch.setattr(datasets.Dataset, "shuffle", functools.partialmethod(datasets.Dataset.shuffle, seed=SHOT_SEED))
    their_prompts, infer = [], Evaluator.batch_inference

    def recorded(self, batch):
        their_prompts.extend(ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"]))
        return infer(self, batch)

    monkeypatch.setattr(Evaluator, "batch_inference", recorded)
    save_dir = tmp_path / "evaluator"
    task_args = {"task": "medmcq_test", "task_dir": str(tmp_path / "task"), "lang": "zh", "n_shot": 5, "save_dir": str(save_dir)}
    Evaluator({**served, **task_args}).eval()
    theirs = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    assert their_prompts == our_prompts  # the same prompts, token for token (a random model picks one letter throughout)
    assert {s: [theirs[s][str(i)] for i in range(len(theirs[s]))] for s in subjects} == ours


SAMPLE_GENERAL = ROOT / "data" / "sample" / "mcq-general"


def test_the_general_suite_takes_its_subjects_by_group_from_the_shipped_sample(tmp_path):
    subjects = read_suite([SAMPLE_GENERAL], suite="general")
    groups = {name: info["category"] for name, info in subjects.items()}
    assert groups == {
        "chinese_food_culture": "China-specific",
        "economics": "Social Sciences",
        "high_school_physics": "STEM",
        "world_history": "Humanities",
    }
    assert all(len(info["ids"]) == len(info["answers"]) == 5 for info in subjects.values())  # fewer than 25: all taken
    with pytest.raises(UserError, match="none of the general suite's subjects found"):
        read_suite([SAMPLE_MCQ], suite="general")


def test_the_general_suite_is_a_fixed_stratified_selection_of_the_real_folders(tmp_path):
    from caretune.evaluation.suites import GENERAL_SUITE, QUESTIONS_PER_SUBJECT

    cmmlu, ceval = SHARED_DATA / "eval" / "cmmlu-general", SHARED_DATA / "eval" / "ceval-general"
    if not cmmlu.exists() or not ceval.exists():
        pytest.skip("../shared/data/eval not present")
    first = read_suite([cmmlu, ceval], suite="general")
    again = read_suite([cmmlu, ceval], suite="general")
    assert {s: i["ids"] for s, i in first.items()} == {s: i["ids"] for s, i in again.items()}  # the same questions
    assert len(first) == sum(len(members) for members in GENERAL_SUITE.values()) == 22
    counts = {group: sum(len(i["ids"]) for i in first.values() if i["category"] == group) for group in GENERAL_SUITE}
    assert counts["China-specific"] == 4 * QUESTIONS_PER_SUBJECT and counts["STEM"] <= 6 * QUESTIONS_PER_SUBJECT
    assert sum(counts.values()) == sum(len(i["ids"]) for i in first.values())
    medical = read_suite([SHARED_DATA / "eval" / "cmmlu-medical"])
    assert not set(first) & set(medical)  # no medical subject in the general suite


def test_question_ids_are_unique_within_and_across_subjects():
    from caretune.evaluation.suites import question_ids

    same = {"question": "q", "A": "a", "B": "b", "C": "c", "D": "d"}
    ids = question_ids("x", [same, same, {**same, "question": "r"}])
    assert len(set(ids)) == 3 and ids[1] == ids[0] + "#2"
    assert question_ids("y", [same])[0] != ids[0]  # the same text in another subject is another question


def test_score_groups_and_keeps_every_questions_result():
    from caretune.evaluation.mcq import score

    subjects = {
        "a": {"category": "STEM", "answers": ["A", "B"], "ids": ["q1", "q2"]},
        "b": {"category": "Humanities", "answers": ["C"], "ids": ["q3"]},
    }
    result = score(subjects, {"a": ["A", "C"], "b": ["C"]})
    assert result["questions"] == {"q1": True, "q2": False, "q3": True}
    assert result["groups"]["STEM"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert result["overall"] == {"correct": 2, "total": 3, "accuracy": 0.6667}


def test_mcnemar_and_the_paired_comparison_by_hand():
    from caretune.evaluation.report import accuracy_verdict
    from caretune.evaluation.stats import mcnemar_exact, paired_accuracy

    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)  # 0.0215
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    base = {f"q{i}": i < 12 for i in range(20)}  # 12 of 20 right
    tuned = {**base, **{f"q{i}": False for i in range(9)}, "q15": True}  # loses 9, gains 1
    result = paired_accuracy(base, {**tuned, "extra": True})
    assert (result["questions"], result["gained"], result["lost"]) == (20, 1, 9)
    assert (result["reference_accuracy"], result["accuracy"], result["change_points"]) == (0.6, 0.2, -40.0)
    assert result["beyond_noise"] and "dropped beyond the noise" in accuracy_verdict("general", result)
    assert paired_accuracy(base, {"other": True}) is None


@pytest.mark.lf
@pytest.mark.slow
def test_both_suites_on_two_runs_then_the_report_sets_gain_beside_cost(tmp_path):
    """`make eval`'s multiple-choice half on the tiny model (two identical runs stand in for base and tuned), then
    `caretune report`: every figure is there, and identical runs change by nothing."""
    from tests.helpers import run_caretune

    recipe = tiny_recipe(tmp_path, "chat")
    sources = ["--source", SAMPLE_MCQ, "--general-source", SAMPLE_GENERAL]
    for side in ("base", "tuned"):
        done = run_caretune(tmp_path, "mcq", recipe, "--suite", "all", *sources, "--out", tmp_path / side, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "medical overall" in done.stdout and "general overall" in done.stdout
        general = json.loads((tmp_path / side / "mcq-general" / "mcq.json").read_text(encoding="utf-8"))
        assert general["suite"] == "general" and general["overall"]["total"] == 20 and len(general["questions"]) == 20
        assert set(general["groups"]) == {"STEM", "Humanities", "Social Sciences", "China-specific"}
    reported = run_caretune(tmp_path, "report", tmp_path / "base", tmp_path / "tuned", "--out", tmp_path / "report")
    assert reported.returncode == 0, reported.stderr
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Medical gain and general cost" in text and "| general | 20 |" in text and "| medical | 12 |" in text
    assert text.count("no change beyond the noise") == 2  # the same model twice: nothing gained, nothing lost


def test_a_ceval_folder_with_its_answerless_test_split_is_read_by_val(tmp_path):
    """C-Eval's archive holds dev/, val/ and test/ (answers withheld): val/ is the one scored."""
    source = tmp_path / "ceval"
    for split, answer in (("dev", "A"), ("val", "B"), ("test", "")):
        (source / split).mkdir(parents=True)
        with open(source / split / f"law_{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "A", "B", "C", "D", "answer"])
            writer.writerow([0, "问题", "甲", "乙", "丙", "丁", answer])
    subjects = read_suite([source], suite="general")
    assert subjects["law"]["answers"] == ["B"] and subjects["law"]["category"] == "Humanities"
