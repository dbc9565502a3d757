"""report.md renders every section from run folders, with PNGs."""

import json

import pytest

from caretune.evaluation.report import write_report


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


def add_judged(run, score, tags, pairwise=None):
    rubric = {
        "mode": "rubric",
        "score": score,
        "ci": [score - 0.1, score + 0.1],
        "n": 62,
        "examples": 62,
        "by_tag": {tag: {"score": value, "ci": [value - 0.1, value + 0.1], "n": 62} for tag, value in tags.items()},
        "judge": {"url": "http://127.0.0.1:8001/v1", "model": "judge-32b", "template_version": "1"},
        "calls": 480,
        "cached": 0,
        "unparsed": 2,
    }
    (run / "judge" / "rubrics_zh").mkdir(parents=True)
    (run / "judge" / "rubrics_zh" / "judge.json").write_text(json.dumps(rubric), encoding="utf-8")
    if pairwise:
        (run / "judge" / "pairwise").mkdir()
        (run / "judge" / "pairwise" / "judge.json").write_text(json.dumps(pairwise), encoding="utf-8")


def test_report_puts_judged_base_and_tuned_side_by_side(tmp_path):
    base = make_run(tmp_path, "base", 3, 10.5)
    tuned = make_run(tmp_path, "lora", 6, 22.25)
    add_judged(base, 0.41, {"axis:safety": 0.3, "theme:emergency": 0.2})
    pairwise = {
        "mode": "pairwise",
        "base": "saves/m/base/predict.yaml",
        "tuned": "recipes/m/predict.yaml",
        "sample": 200,
        "judged": 198,
        "win": 99,
        "tie": 60,
        "loss": 39,
        "shares": {"win": 0.5, "tie": 0.303, "loss": 0.197},
        "ci": {"win": [0.43, 0.57], "tie": [0.24, 0.37], "loss": [0.15, 0.26]},
        "mean_answer_chars": {"base": 310.5, "tuned": 402.0},
        "judge": {"model": "judge-32b"},
    }
    add_judged(tuned, 0.63, {"axis:safety": 0.7, "theme:emergency": 0.6}, pairwise)
    text = write_report([str(base), str(tuned)], str(tmp_path / "report")).read_text(encoding="utf-8")
    assert "Rubric set `rubrics_zh`, judged by judge-32b:" in text
    assert "| overall | 0.41 [0.31, 0.51] (n=62) | 0.63 [0.53, 0.73] (n=62) |" in text
    assert "| axis:safety | 0.30 [0.20, 0.40] (n=62) | 0.70 [0.60, 0.80] (n=62) |" in text
    assert "win 50% [43%, 57%], tie 30% [24%, 37%], loss 20% [15%, 26%]" in text
    assert "mean answer length base 310.5, tuned 402.0 characters" in text
    assert "![rubric scores per tag](judge.png)" in text
    assert (tmp_path / "report" / "judge.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_care_beyond_the_reminder(tmp_path):
    run = make_run(tmp_path, "lora", 6, 22.25)
    safety = json.loads((run / "predict" / "safety.json").read_text(encoding="utf-8"))
    safety["safety"].update(advises_care_beyond_reminder_share=0.25, care_only_through_reminder=2)
    safety["care"]["reference"]["advises_care_beyond_reminder_share"] = 0.779
    (run / "predict" / "safety.json").write_text(json.dumps(safety), encoding="utf-8")
    text = write_report([str(run)], str(tmp_path / "report")).read_text(encoding="utf-8")
    assert "| advise seeing a doctor beyond the verbatim reminder | 25% |" in text
    assert "| answers whose only care advice is the reminder | 2 |" in text
    assert "| held-out references advising a doctor before reminders were added | 78% |" in text


def test_report_accepts_the_training_folder_runs_prints(tmp_path):
    run = make_run(tmp_path, "lora", 6, 22.25)
    text = write_report([str(run / "sft")], str(tmp_path / "report")).read_text(encoding="utf-8")
    assert "![training loss](loss.png)" in text and "| BLEU-4 | 22.25 |" in text


def _set(run, **changes):
    path = run / "predict" / "safety.json"
    safety = json.loads(path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        safety.setdefault(section, {})[key] = value
    path.write_text(json.dumps(safety), encoding="utf-8")


SETTINGS = {
    "settings__template": "qwen3",
    "settings__enable_thinking": False,
    "settings__max_new_tokens": 1024,
    "settings__do_sample": False,
    "settings__backend": "trainer",
}


def test_report_shows_generation_settings_and_cut_and_think_shares(tmp_path):
    base, tuned = make_run(tmp_path, "base", 3, 10.5), make_run(tmp_path, "lora", 6, 22.25)
    _set(base, **SETTINGS, safety__cut_at_max_new_tokens_share=0.5, safety__think_blocks_share=0.25)
    _set(tuned, **SETTINGS, safety__cut_at_max_new_tokens_share=0.0, safety__think_blocks_share=0.0)
    text = write_report([str(base), str(tuned)], str(tmp_path / "report")).read_text(encoding="utf-8")
    assert "## Generation settings" in text and "| max_new_tokens | 1024 | 1024 |" in text
    assert "| template | qwen3 | qwen3 |" in text and "| enable_thinking | False | False |" in text
    assert "| share of answers cut at max_new_tokens | 50% | 0% |" in text
    assert "| share of answers with leftover `<think>` text | 25% | 0% |" in text


def test_report_refuses_runs_generated_differently(tmp_path):
    from caretune.basics.errors import UserError

    base, tuned = make_run(tmp_path, "base", 3, 10.5), make_run(tmp_path, "lora", 6, 22.25)
    _set(base, **{**SETTINGS, "settings__template": "qwen3_nothink", "settings__max_new_tokens": 512})
    _set(tuned, **SETTINGS)
    with pytest.raises(UserError, match=r"different settings \(max_new_tokens 512 vs 1024; template 'qwen3_nothink' vs 'qwen3'\)"):
        write_report([str(base), str(tuned)], str(tmp_path / "report"))
    assert not (tmp_path / "report" / "report.md").exists()


def test_report_refuses_a_run_without_recorded_settings_beside_one_with_them(tmp_path):
    from caretune.basics.errors import UserError

    base, tuned = make_run(tmp_path, "base", 3, 10.5), make_run(tmp_path, "lora", 6, 22.25)
    text = write_report([str(base), str(tuned)], str(tmp_path / "r1")).read_text(encoding="utf-8")
    assert "Generation settings were not recorded for these runs: the comparison below is unchecked." in text
    _set(tuned, **SETTINGS)
    with pytest.raises(UserError, match=r"base recorded no generation settings .* run caretune eval on it again"):
        write_report([str(base), str(tuned)], str(tmp_path / "r2"))


def _set_mcq(run, folder="mcq", **recorded):
    path = run / folder / "mcq.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**result, **recorded}), encoding="utf-8")


PROMPT = {"template": "qwen3", "enable_thinking": False, "default_system": "你是一名专业的医疗咨询助手。"}


def test_report_refuses_multiple_choice_scored_with_other_prompts(tmp_path):
    """A suite scored in thinking mode, with other shots or without the system prompt is not set beside one scored
    as chat serves; nor is one that recorded no prompt (scored before caretune recorded it)."""
    from caretune.basics.errors import UserError

    base, tuned = make_run(tmp_path, "base", 3, 10.5), make_run(tmp_path, "lora", 6, 22.25)
    _set_mcq(base, n_shot=5, prompt=PROMPT)
    scored = (tuned / "mcq" / "mcq.json").read_text(encoding="utf-8")
    (tuned / "mcq" / "mcq.json").unlink()
    assert write_report([str(base), str(tuned)], str(tmp_path / "one")).exists()  # nothing to set it beside
    (tuned / "mcq" / "mcq.json").write_text(scored, encoding="utf-8")
    _set_mcq(tuned, n_shot=5, prompt=PROMPT)
    assert write_report([str(base), str(tuned)], str(tmp_path / "same")).exists()
    _set_mcq(tuned, n_shot=0, prompt={**PROMPT, "enable_thinking": True})
    with pytest.raises(
        UserError,
        match=r"base and \S*lora were scored on the medical suite with different settings \(enable_thinking False vs "
        r"True; n_shot 5 vs 0\): score both with the same recipe",
    ):
        write_report([str(base), str(tuned)], str(tmp_path / "differ"))
    (base / "mcq" / "mcq.json").write_text(json.dumps({"overall": {"accuracy": 0.3}, "subjects": {}}), encoding="utf-8")
    with pytest.raises(
        UserError, match=r"base recorded no medical multiple-choice prompt settings .* run caretune mcq --suite medical on it again"
    ):
        write_report([str(base), str(tuned)], str(tmp_path / "unrecorded"))
    for run in (base, tuned):  # the general suite is checked alike
        _set_mcq(run, n_shot=5, prompt=PROMPT)
        (run / "mcq-general").mkdir()
        general = {"overall": {"accuracy": 0.5}, "subjects": {}, "n_shot": 5, "prompt": {**PROMPT, "default_system": run.name}}
        (run / "mcq-general" / "mcq.json").write_text(json.dumps(general), encoding="utf-8")
    with pytest.raises(UserError, match=r"scored on the general suite with different settings \(default_system 'base' vs 'lora'\)"):
        write_report([str(base), str(tuned)], str(tmp_path / "general"))
    assert not any((tmp_path / name / "report.md").exists() for name in ("differ", "unrecorded", "general"))


@pytest.mark.lf
def test_generation_settings_fill_llamafactorys_defaults_and_ignore_sampling_when_greedy():
    from caretune.evaluation.evaluate import generation_settings, settings_differences

    explicit = {"template": "qwen3", "max_new_tokens": 1024, "do_sample": False, "temperature": 0.3}
    implicit = {"template": "qwen3", "do_sample": False}
    assert settings_differences(generation_settings(explicit, "trainer"), generation_settings(implicit, "trainer")) == []
    sampled = generation_settings({"template": "qwen3"}, "trainer")  # LLaMA-Factory samples unless told not to
    assert sampled["do_sample"] is True and sampled["temperature"] is not None
    assert generation_settings({"template": "qwen3"}, "huggingface")["do_sample"] is False  # the chat path is greedy


def test_report_sets_the_medical_gain_beside_the_general_cost(tmp_path):
    base, tuned = make_run(tmp_path, "base", 3, 10.5), make_run(tmp_path, "lora", 6, 22.25)

    def suite(run, folder, right):
        questions = {f"q{i}": i in right for i in range(40)}
        correct = sum(questions.values())
        scored = {"overall": {"correct": correct, "total": 40, "accuracy": correct / 40}, "subjects": {}, "questions": questions}
        (run / folder).mkdir(exist_ok=True)
        (run / folder / "mcq.json").write_text(json.dumps(scored), encoding="utf-8")

    suite(base, "mcq", set(range(20)))
    suite(tuned, "mcq", set(range(30)))  # gains 10, loses none
    suite(base, "mcq-general", set(range(24)))
    suite(tuned, "mcq-general", set(range(22)) | {30})  # loses 2, gains 1
    text = write_report([str(base), str(tuned)], str(tmp_path / "report")).read_text(encoding="utf-8")
    assert "## Medical gain and general cost" in text and "![medical and general accuracy](tradeoff.png)" in text
    assert f"| {tuned} | medical | 40 | 50.0% | 75.0% | +25.0 | 10 | 0 | 0.00195 |" in text
    assert f"| {tuned} | general | 40 | 60.0% | 57.5% | -2.5 | 1 | 2 | 1 |" in text
    assert "general: 57.5% against 60.0% (-2.5 points; 1 gained, 2 lost of 40 questions; McNemar p = 1)" in text
    assert "no change beyond the noise" in text
    assert "medical: 75.0% against 50.0%" in text and "rose beyond the noise" in text
    assert "| multiple choice, general suite | 60.0% (24/40) | 57.5% (23/40) |" in text
    assert (tmp_path / "report" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
