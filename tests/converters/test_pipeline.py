"""Whole conversions: accounting, dedupe, held-out split, reports, rejects, atomic outputs."""

import hashlib
import json
import os
import threading

import pytest

from caretune.basics.errors import UserError
from caretune.constants import MAX_EVAL_FRACTION
from converters import care, chatmed, choices, huatuo
from converters.keyset import KeySet
from converters.options import Options
from converters.pipeline import Batch, _drop_duplicates
from converters.records import query_key
from converters.report import Tally
from converters.turns import TRAIN_ALL, unfitted_plan
from tests.helpers import CHATMED_SAMPLE, HUATUO_SAMPLE, accounted, convert_into, read_json, write_lines


def convert(source, raw, project, eval_size=5, **kwargs):
    return convert_into(project, source, raw, eval_size=eval_size, max_eval_fraction=MAX_EVAL_FRACTION, **kwargs)


def keys_of(path, source):
    return [query_key(source.first_query(record)) for record in read_json(path)]


def test_chatmed_sample_every_row_accounted_for(project):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    assert accounted(report)
    lines = [line for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert report["read"] == len(lines) == 78
    assert report["skipped"] == {
        "empty_after_strip": 1,
        "invalid_json": 1,
        "missing_field": 1,
        "non_string_field": 1,
        "not_an_object": 1,
        "ai_self_reference": 1,
        "answer_repeats_question": 1,
        "contact_or_ad": 1,
        "degenerate_repetition": 1,
        "truncated_answer": 1,
    }
    assert report["duplicates"] == 1 and report["eval"] == 5 and report["written"] == 62
    assert len(read_json(outputs.train)) == report["written"] and len(read_json(outputs.eval)) == report["eval"]
    assert report["pii_masked"] == {"phone": 1, "id_card": 0, "email": 1}
    assert report["input"]["sha256"] == hashlib.sha256(CHATMED_SAMPLE.read_bytes()).hexdigest()
    rejects = [json.loads(line) for line in outputs.rejects.read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == report["duplicates"] + sum(report["skipped"].values())
    assert {r["reason"] for r in rejects} >= {"invalid_json", "duplicate"}
    assert [r["line"] for r in rejects] == sorted(r["line"] for r in rejects)


def test_rejected_lines_point_at_the_rows(project):
    _, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    lines = CHATMED_SAMPLE.read_text(encoding="utf-8").split("\n")
    for reject in map(json.loads, outputs.rejects.read_text(encoding="utf-8").splitlines()):
        row = lines[reject["line"] - 1]
        if reject["reason"] == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(row)
        elif reject["reason"] == "duplicate":
            assert json.loads(row)["query"].strip() == json.loads(lines[0])["query"]


def test_huatuo_sample_accounting_and_notes(project):
    report, outputs = convert(huatuo, HUATUO_SAMPLE, project)
    assert accounted(report) and report["read"] == 69
    assert report["notes"] == {"trailing_human_turn_dropped": 1}
    assert report["pii_masked"] == {"phone": 0, "id_card": 1, "email": 0}
    assert report["skipped"] == {
        "bad_role_order": 1,
        "empty_after_strip": 1,
        "missing_field": 1,
        "non_string_field": 1,
        "unknown_shape": 1,
        "ai_self_reference": 1,
        "truncated_answer": 1,
    }
    records = read_json(outputs.train) + read_json(outputs.eval)
    assert any(len(r["conversations"]) == 4 for r in records)  # multi-turn kept
    assert all(len(r["conversations"]) % 2 == 0 for r in records)


def test_duplicates_across_datasets_in_the_same_folder(project):
    convert(chatmed, CHATMED_SAMPLE, project)
    report, outputs = convert(huatuo, HUATUO_SAMPLE, project)
    assert report["duplicates"] == 1  # the sample's one query that ChatMed also has
    assert report["prior_queries"]["datasets"] == ["multi-med"]
    rejects = [json.loads(line) for line in outputs.rejects.read_text(encoding="utf-8").splitlines()]
    details = [r["detail"] for r in rejects if r["reason"] == "duplicate"]
    assert "query already in multi-med" in details
    chat_keys = set(keys_of(project / "data/multi-med.json", chatmed) + keys_of(project / "data/multi-med-eval.json", chatmed))
    huatuo_keys = set(keys_of(outputs.train, huatuo) + keys_of(outputs.eval, huatuo))
    assert not chat_keys & huatuo_keys


def test_a_batch_keeps_each_new_query_once_and_names_where_each_duplicate_was_seen():
    keys = [5, 7, 5, 9, 7, 9, 11, 0, 0]
    records = [bytes([key]) for key in keys]
    plans = [unfitted_plan(1, TRAIN_ALL)] * 9
    lines = list(range(10, 19))
    batch = Batch(read=9, lines=lines, elements=[0] * 9, keys=keys, records=records, cares=bytearray(9), chars=[1] * 9, plans=plans)
    seen, prior, tally = KeySet([11]), KeySet([9]), Tally()
    kept, duplicate_lines = _drop_duplicates(batch, tally, seen, prior, "query already in multi-med")
    assert kept.lines == [10, 11, 17] and kept.keys == [5, 7, 0]
    assert sorted(batch.rejects) == [
        (12, 0, "duplicate", "query seen earlier in this file"),
        (13, 0, "duplicate", "query already in multi-med"),
        (14, 0, "duplicate", "query seen earlier in this file"),
        (15, 0, "duplicate", "query already in multi-med"),
        (16, 0, "duplicate", "query seen earlier in this file"),
        (18, 0, "duplicate", "query seen earlier in this file"),
    ]
    assert duplicate_lines == {12, 13, 14, 15, 16, 18} and tally.duplicates == 6
    assert 9 not in seen  # a query of an earlier dataset is not counted as this file's own


def test_reconverting_the_same_dataset_does_not_dedupe_against_itself(project):
    first, _ = convert(chatmed, CHATMED_SAMPLE, project)
    second, _ = convert(chatmed, CHATMED_SAMPLE, project)
    assert first["written"] == second["written"] and first["duplicates"] == second["duplicates"]


def test_held_out_split_is_deterministic_disjoint_and_smallest_keys(project, tmp_path):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    train_keys, eval_keys = keys_of(outputs.train, chatmed), keys_of(outputs.eval, chatmed)
    assert not set(train_keys) & set(eval_keys)
    assert max(eval_keys) < min(train_keys)  # the eval rows are the smallest keys: stable on any machine
    again = tmp_path / "again"
    (again / "data").mkdir(parents=True)
    convert(chatmed, CHATMED_SAMPLE, again)
    assert (again / "data/multi-med-eval.json").read_bytes() == outputs.eval.read_bytes()
    assert (again / "data/multi-med.json").read_bytes() == outputs.train.read_bytes()


def test_eval_never_takes_more_than_the_max_fraction(project):
    report, _ = convert(chatmed, CHATMED_SAMPLE, project, eval_size=500)
    kept = report["written"] + report["eval"]
    assert report["eval"] == int(kept * MAX_EVAL_FRACTION) == 6
    report, _ = convert(chatmed, CHATMED_SAMPLE, project, eval_size=0)
    assert report["eval"] == 0 and report["written"] == kept


def test_registers_all_four_datasets(project):
    convert(chatmed, CHATMED_SAMPLE, project)
    convert(huatuo, HUATUO_SAMPLE, project)
    registry = read_json(project / "dataset_info.json")
    assert list(registry) == ["multi-med", "multi-med-eval", "huatuo2-sft", "huatuo2-eval"]
    assert registry["multi-med"]["file_name"] == "data/multi-med.json"
    assert registry["huatuo2-eval"]["file_name"] == "data/huatuo2-eval.json"
    assert registry["multi-med"]["formatting"] == "alpaca" and registry["huatuo2-sft"]["formatting"] == "sharegpt"
    assert registry["huatuo2-sft"]["tags"]["user_tag"] == "human"


def test_all_rows_bad_is_an_error_and_writes_nothing(project):
    raw = write_lines(project / "bad.jsonl", ['{"query": 1}', "{nope", '{"response": "x"}'])
    with pytest.raises(UserError, match="no row could be converted"):
        convert(chatmed, raw, project)
    assert [p.name for p in (project / "data").iterdir() if not p.name.endswith(".lock")] == []  # locks stay
    assert not (project / "dataset_info.json").exists()


def test_fatal_input_error_leaves_previous_outputs_untouched(project):
    convert(chatmed, CHATMED_SAMPLE, project)
    before = {p.name: p.read_bytes() for p in (project / "data").iterdir()}
    registry_before = (project / "dataset_info.json").read_bytes()
    lines = CHATMED_SAMPLE.read_bytes().split(b"\n")
    broken = project / "broken.jsonl"
    broken.write_bytes(b"\n".join(lines[:30] + ['{"query": "头疼"}'.encode("gbk")] + lines[30:]))
    with pytest.raises(UserError, match=r"broken\.jsonl:31: not UTF-8"):
        convert(chatmed, broken, project)
    assert {p.name: p.read_bytes() for p in (project / "data").iterdir()} == before  # no temp files left either
    assert (project / "dataset_info.json").read_bytes() == registry_before


def test_worker_processes_give_identical_outputs(project, tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    rows = [line for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines()]
    big.write_text("\n".join(rows * 40) + "\n", encoding="utf-8")
    monkeypatch.setattr("converters.reader.CHUNK_BYTES", 4096)
    one, outputs = convert(chatmed, big, project)
    single = {p: p.read_bytes() for p in (outputs.train, outputs.eval, outputs.rejects)}
    varying = ("seconds", "workers", "registry_changed")
    two, _ = convert(chatmed, big, project, workers=2)  # forked: no other thread runs here
    assert {p: p.read_bytes() for p in single} == single
    assert {k: v for k, v in one.items() if k not in varying} == {k: v for k, v in two.items() if k not in varying}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()  # forking with a live thread is unsafe: the workers come from a fork server instead
    try:
        served, _ = convert(chatmed, big, project, workers=2)
    finally:
        stop.set()
        other.join()
    assert {p: p.read_bytes() for p in single} == single
    assert {k: v for k, v in one.items() if k not in varying} == {k: v for k, v in served.items() if k not in varying}


def read_json_lines(lines):
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def test_large_json_lines_inputs_get_a_worker_per_core(project, tmp_path, monkeypatch):
    rows = CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines()
    big = write_lines(tmp_path / "big.jsonl", rows * 8)
    assert convert(chatmed, big, project)[0]["workers"] == 1  # under PARALLEL_MIN_BYTES: one process
    monkeypatch.setattr("converters.pipeline.PARALLEL_MIN_BYTES", 1024)
    monkeypatch.setattr("converters.reader.CHUNK_BYTES", 4096)
    cores = len(os.sched_getaffinity(0))
    assert convert(chatmed, big, project)[0]["workers"] == min(cores, 4)
    array = tmp_path / "big.json"
    valid = [json.dumps(row, ensure_ascii=False) for row in read_json_lines(rows) if isinstance(row, dict)]
    array.write_text("[" + ",".join(valid) + "]", encoding="utf-8")  # arrays are parsed in one process
    assert convert(chatmed, array, project, eval_size=0)[0]["workers"] == 1


def test_lone_surrogates_are_skipped_not_written(project):
    raw = write_lines(
        project / "s.jsonl",
        [
            '{"query": "ok", "response": "多喝水，注意休息，必要时就医。"}',
            '{"query": "bad \\ud800 text", "response": "多喝水，注意休息，必要时就医。"}',
        ],
    )
    report, outputs = convert(chatmed, raw, project, eval_size=0)
    assert report["skipped"] == {"invalid_unicode": 1} and report["written"] == 1
    outputs.train.read_bytes().decode("utf-8")


def cli_convert(project, monkeypatch, source_name, raw, *args):
    from click.testing import CliRunner

    from caretune.cli import main

    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["convert", source_name, str(raw), "--no-card", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The outputs of the converter before quality filters, care reminders and the system layout existed,
# on the shipped sample at the default eval size.
PREVIOUS = {
    "multi-med.json": "ec34144913aaaca203e63795afbe735da599c004bb9d42d8004e7bc66403b22b",
    "multi-med-eval.json": "50923fa2d3a7ab14f16a799dcf55ce17e52e16a9a0314dba097bc5d7b7bd46d5",
    "multi-med.rejects.jsonl": "12d215c6a3c24bc0622610e3763190040cbf1457237dd7476fbe0e0a230e303e",
    "huatuo2-sft.json": "2c65115bf491bbb75b26a6fd273d2a2195bb57cb1a6f3e3e9553ad5900929439",
    "huatuo2-eval.json": "cf1a67b1901b5689a783aea1c3682786fdd4bc80af207ee7786a91cb73355b06",
    "huatuo2-sft.rejects.jsonl": "d7e239f6fd5719d8ef888055d5659e03ca95e1e18e84a46232e3c96d0d2f9061",
}


def _without_conversation_keys(path):
    """The file as it was before multi-turn rows carried their conversation's key: each row re-encoded without it."""
    from converters.writer import JsonArrayWriter

    rows = [{k: v for k, v in row.items() if k != "conversation"} for row in read_json(path)]
    with JsonArrayWriter(path) as out:
        out.extend_json([huatuo.encode(row) for row in rows])
        out.commit()


def _without_elements(path):
    """The rejects log as it was before a JSON array's rejects named their element."""
    from converters.writer import JsonLinesWriter

    rejects = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rejects and all(reject["element"] >= 1 for reject in rejects)
    with JsonLinesWriter(path) as out:
        for reject in rejects:
            out.append({k: v for k, v in reject.items() if k != "element"})
        out.commit()


def test_filters_none_and_care_off_reproduce_the_previous_rows_exactly(project, monkeypatch):
    old = ("--filters", "none", "--care-reminder", "off", "--train-answers", "last", "--cutoff-len", "0")
    cli_convert(project, monkeypatch, "chatmed", CHATMED_SAMPLE, *old, "--layout", "walkthrough")
    cli_convert(project, monkeypatch, "huatuo", HUATUO_SAMPLE, *old)
    for name in ("huatuo2-sft.json", "huatuo2-eval.json"):
        assert all(len(row["conversation"]) == 16 for row in read_json(project / "data" / name))
        _without_conversation_keys(project / "data" / name)
    _without_elements(project / "data" / "huatuo2-sft.rejects.jsonl")
    assert {name: sha256(project / "data" / name) for name in PREVIOUS} == PREVIOUS
    assert (project / "data/multi-med.changes.jsonl").read_bytes() == b""


def test_filtered_rows_never_reach_train_or_eval(project):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    lines = CHATMED_SAMPLE.read_text(encoding="utf-8").split("\n")
    filtered = [json.loads(line) for line in outputs.rejects.read_text(encoding="utf-8").splitlines()]
    filtered = [r for r in filtered if r["reason"] in set(choices.FILTER_REASONS)]
    assert len(filtered) == sum(report["skipped"].get(reason, 0) for reason in choices.FILTER_REASONS) == 5
    written = {record["output"] for record in read_json(outputs.train) + read_json(outputs.eval)}
    for reject in filtered:
        assert json.loads(lines[reject["line"] - 1])["response"].strip() not in written


def test_changes_file_lists_every_change_with_its_source_line(project):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    changes = [json.loads(line) for line in outputs.changes.read_text(encoding="utf-8").splitlines()]
    assert report["changes"] == {"think_removed": 0, "wrapper_stripped": 1, "care_reminder_added": 2, "emergency_reminder_added": 1}
    assert len(changes) == sum(report["changes"].values())
    lines = CHATMED_SAMPLE.read_text(encoding="utf-8").split("\n")
    by_answer = {r["output"]: r for r in read_json(outputs.train) + read_json(outputs.eval)}
    for change in changes:
        raw = json.loads(lines[change["line"] - 1])
        if change["change"] == "wrapper_stripped":
            assert raw["query"].startswith("<s>问：")
            continue
        sentence = care.CARE_REMINDER if change["change"] == "care_reminder_added" else care.EMERGENCY_REMINDER
        record = by_answer[raw["response"].strip() + "\n\n" + sentence]
        assert record["instruction"] == raw["query"].strip()


def test_care_shares_are_reported_for_train_and_eval(project):
    report, _ = convert(chatmed, CHATMED_SAMPLE, project)
    assert report["care"]["train"]["rows"] == report["written"] and report["care"]["eval"]["rows"] == report["eval"]
    assert report["care"]["train"]["advises_care_share"] == 1.0
    off, _ = convert(chatmed, CHATMED_SAMPLE, project, options=Options(care_reminder="off"))
    assert off["care"]["train"]["advises_care_share"] < 1.0 and off["changes"]["care_reminder_added"] == 0
    assert off["care"]["train"]["urgent_questions"] == 2 and off["care"]["train"]["urges_emergency"] == 1


def test_drop_policy_skips_rows_under_their_reasons(project):
    report, _ = convert(chatmed, CHATMED_SAMPLE, project, options=Options(care_reminder="drop"))
    assert accounted(report)
    # the sample's duplicate query has an answer without care advice: dropped before dedupe sees it
    assert report["skipped"]["no_care_advice"] == 3 and report["skipped"]["emergency_without_urgency"] == 1
    assert report["duplicates"] == 0
    assert report["care"]["train"]["advises_care_share"] == 1.0 and report["changes"]["care_reminder_added"] == 0


def test_keep_switches_one_filter_off(project, monkeypatch):
    cli_convert(project, monkeypatch, "chatmed", CHATMED_SAMPLE, "--keep", "ai_self_reference", "--keep", "truncated_answer")
    report = read_json(project / "data/multi-med.report.json")
    assert "ai_self_reference" not in report["skipped"] and "truncated_answer" not in report["skipped"]
    assert report["skipped"]["contact_or_ad"] == 1 and accounted(report)


def test_layout_decides_the_registry_columns(project):
    convert(chatmed, CHATMED_SAMPLE, project, options=Options(layout="walkthrough"))
    registry = read_json(project / "dataset_info.json")
    assert "system" not in registry["multi-med"]["columns"]
    assert read_json(project / "data/multi-med.json")[0]["instruction"] == chatmed.MEDICAL_SYSTEM_PROMPT
    convert(chatmed, CHATMED_SAMPLE, project)
    registry = read_json(project / "dataset_info.json")
    assert registry["multi-med"]["columns"]["system"] == "system"
    assert registry["multi-med-eval"]["columns"]["system"] == "system"
    record = read_json(project / "data/multi-med.json")[0]
    assert record["system"] == chatmed.MEDICAL_SYSTEM_PROMPT and record["input"] == ""


def test_accounting_mismatch_is_a_real_error(project, monkeypatch):
    from converters import pipeline

    original = pipeline.convert_rows

    def miscounting(*args):
        batch = original(*args)
        batch.read += 1
        return batch

    monkeypatch.setattr(pipeline, "convert_rows", miscounting)  # a row lost track of: no report is written
    with pytest.raises(UserError, match="internal error: read"):
        convert(chatmed, CHATMED_SAMPLE, project)
    assert not (project / "data/multi-med.report.json").exists()


def test_care_off_changes_no_answer(project):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project, options=Options(care_reminder="off"))
    assert report["changes"]["care_reminder_added"] == report["changes"]["emergency_reminder_added"] == 0
    raw = {}
    for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("response"), str):
            raw.setdefault(row["response"].strip(), row)
    written = read_json(outputs.train) + read_json(outputs.eval)
    assert written and all(record["output"] in raw for record in written)


def test_rejects_of_a_json_array_name_their_element(tmp_path):
    """A JSON array written on one line put every reject at line 1; each reject now names its element (1-based)."""
    from converters import general

    rows = (
        [{"instruction": "写一首诗", "output": "作为一个AI语言模型，我可以写诗。"}]
        + [{"instruction": f"问题{n}", "output": f"这是第{n}个完整的回答，内容充实。"} for n in range(3)]
        + [{"instruction": "", "output": ""}]
    )
    raw = tmp_path / "array.json"
    raw.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")  # one line
    report, outputs = convert_into(tmp_path, general, raw, eval_size=0)
    rejects = [json.loads(line) for line in outputs.rejects.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["element"], r["reason"]) for r in rejects] == [(1, 1, "ai_self_reference"), (1, 5, "empty_after_strip")]
