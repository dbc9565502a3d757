"""Multiple-choice benchmark: task folders from CMMLU- and C-Eval-style CSVs, accuracy by hand."""

import csv
import json

import pytest

from caretune.evaluation.mcq import McqError, build_task, read_questions
from tests.helpers import ROOT, SHARED_DATA, tiny_recipe

SAMPLE_MCQ = ROOT / "data" / "sample" / "mcq"


def test_build_task_from_the_sample(tmp_path):
    subjects = build_task([SAMPLE_MCQ], tmp_path)
    assert set(subjects) == {"first_aid", "pharmacology"}
    assert subjects["first_aid"]["answers"] == ["C", "B", "A", "B", "B", "B"]
    task = tmp_path / "medmcq"
    readme = (task / "README.md").read_text(encoding="utf-8")
    assert "config_name: first_aid" in readme and "path: pharmacology/test.jsonl" in readme
    mapping = json.loads((task / "mapping.json").read_text(encoding="utf-8"))
    assert mapping["pharmacology"]["category"] == "Other"
    first = json.loads((task / "first_aid" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"question", "A", "B", "C", "D", "answer"}


def test_ceval_style_folder(tmp_path):
    source = tmp_path / "ceval"
    for split, rows in (("dev", 2), ("val", 3)):
        (source / split).mkdir(parents=True)
        with open(source / split / f"physician_{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
            for i in range(rows):
                writer.writerow([i, f"问题{i}", "甲", "乙", "丙", "丁", "ABCD"[i], "解析"])
    subjects = build_task([source], tmp_path / "task")
    assert subjects["physician"]["answers"] == ["A", "B", "C"]


def test_bad_answer_names_file_and_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(McqError, match=r"x\.csv:3: answer 'E' is not one of A-D"):
        read_questions(path)
    with pytest.raises(McqError, match="expected dev/ and test/"):
        build_task([tmp_path], tmp_path / "task")


def test_real_cmmlu_and_ceval_folders_build(tmp_path):
    cmmlu, ceval = SHARED_DATA / "eval" / "cmmlu-medical", SHARED_DATA / "eval" / "ceval-medical"
    if not cmmlu.exists() or not ceval.exists():
        pytest.skip("../shared/data/eval not present")
    subjects = build_task([cmmlu, ceval], tmp_path)
    assert len(subjects) == 13 and sum(len(s["answers"]) for s in subjects.values()) == 1941 + 19 + 22 + 49


@pytest.mark.lf
@pytest.mark.slow
def test_accuracy_equals_a_hand_count(tmp_path):
    from caretune.evaluation.mcq import run_mcq

    recipe = tiny_recipe(tmp_path, "chat")

    result = run_mcq(str(recipe), [str(SAMPLE_MCQ)], tmp_path / "run")
    predictions = json.loads((tmp_path / "run" / "evaluator" / "results.json").read_text(encoding="utf-8"))
    by_hand = 0
    for subject in ("first_aid", "pharmacology"):
        with open(SAMPLE_MCQ / "test" / f"{subject}.csv", encoding="utf-8") as f:
            answers = [row["Answer"] for row in csv.DictReader(f)]
        hits = sum(predictions[subject][str(i)] == a for i, a in enumerate(answers))
        assert result["subjects"][subject]["correct"] == hits
        by_hand += hits
    assert result["overall"] == {"correct": by_hand, "total": 12, "accuracy": round(by_hand / 12, 4)}
    log = (tmp_path / "run" / "evaluator" / "results.log").read_text(encoding="utf-8")
    assert f"Average: {100 * by_hand / 12:.2f}" in log  # LLaMA-Factory's own score agrees
    again = run_mcq(str(recipe), [str(SAMPLE_MCQ)], tmp_path / "run")
    assert again == result  # seeded few-shot selection: the same prompts every run
