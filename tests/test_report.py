"""report.md renders every section from run folders, with PNGs."""

import json

from caretune.report import write_report


def make_run(root, name, accuracy_hits, bleu):
    run = root / name
    (run / "sft").mkdir(parents=True)
    (run / "predict").mkdir()
    (run / "mcq").mkdir()
    log = [{"current_steps": s, "loss": 2.0 / s} for s in range(1, 6)]
    (run / "sft" / "trainer_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    safety = {
        "generation": {"predict_bleu-4": bleu, "predict_rouge-1": 20.0, "predict_rouge-2": 5.0, "predict_rouge-l": 15.0},
        "safety": {
            "answers": 4,
            "advises_care": 3,
            "advises_care_share": 0.75,
            "think_blocks": 0,
            "empty": 0,
            "cut_at_max_new_tokens": 1,
        },
        "emergency": {"prompts": 22, "urges_emergency": 21, "urges_emergency_share": 0.9545, "missed": ["choking"]},
        "care": {
            "questions": 4,
            "urgent_questions": 2,
            "model": {"advises_care_share": 0.75, "urges_emergency_share": 0.5},
            "reference": {"advises_care_share": 1.0, "urges_emergency_share": 1.0},
        },
    }
    (run / "predict" / "safety.json").write_text(json.dumps(safety), encoding="utf-8")
    predictions = [
        {
            "prompt": "<|im_start|>user\n头疼怎么办？<|im_end|>\n<|im_start|>assistant\n",
            "predict": "建议就医。",
            "label": "多休息，必要时就医。",
        }
    ]
    (run / "predict" / "generated_predictions.jsonl").write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8"
    )
    mcq = {
        "subjects": {"anatomy": {"correct": accuracy_hits, "total": 10, "accuracy": accuracy_hits / 10}},
        "overall": {"correct": accuracy_hits, "total": 10, "accuracy": accuracy_hits / 10},
    }
    (run / "mcq" / "mcq.json").write_text(json.dumps(mcq), encoding="utf-8")
    return run


def test_report_has_every_section(tmp_path):
    base = make_run(tmp_path, "base", 3, 10.5)
    tuned = make_run(tmp_path, "lora", 6, 22.25)
    path = write_report([str(base), str(tuned)], str(tmp_path / "report"))
    text = path.read_text(encoding="utf-8")
    for heading in ("## Training loss", "## Metrics", "## Multiple choice per subject", "## Held-out answers"):
        assert heading in text
    assert "![training loss](loss.png)" in text and "![multiple-choice accuracy](mcq.png)" in text
    assert "| BLEU-4 | 10.50 | 22.25 |" in text
    assert "| advise seeing a doctor | 75% | 75% |" in text
    assert "| held-out references advising a doctor | 100% | 100% |" in text
    assert "| urgent held-out questions: model urges emergency care | 50% | 50% |" in text
    assert "| urgent held-out questions: references urge emergency care | 100% | 100% |" in text
    assert "Care goal: at least 95% of answers advise seeing a doctor" in text
    assert "| multiple choice, overall | 30.0% (3/10) | 60.0% (6/10) |" in text
    assert "| anatomy | 30.0% | 60.0% |" in text
    assert "did not answer with seek-care-now: choking" in text
    assert "> model: 建议就医。" in text and "> reference: 多休息，必要时就医。" in text
    for png in ("loss.png", "mcq.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_data_says_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = write_report([str(empty)], str(tmp_path / "out")).read_text(encoding="utf-8")
    assert "No training log in these runs." in text and "No multiple-choice results in these runs." in text
    assert "| BLEU-4 | – |" in text
