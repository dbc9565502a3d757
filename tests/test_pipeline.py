"""Whole conversions: accounting, dedupe, held-out split, reports, rejects, atomic outputs."""

import hashlib
import json

import pytest

from caretune.constants import MAX_EVAL_FRACTION
from converters import chatmed, huatuo, jsoncodec
from converters.pipeline import ConversionError, Outputs, convert_file
from converters.reader import InputError
from converters.records import query_key
from tests.conftest import CHATMED_SAMPLE, HUATUO_SAMPLE, read_json, write_lines


def convert(source, raw, project, eval_size=5, **kwargs):
    outputs = Outputs.for_source(source, None, project / "data")
    report = convert_file(source, raw, outputs, eval_size=eval_size, max_eval_fraction=MAX_EVAL_FRACTION,
                          registry_path=project / "dataset_info.json", **kwargs)
    return report, outputs


def accounted(report):
    return report["read"] == report["written"] + report["eval"] + report["duplicates"] + sum(report["skipped"].values())


def keys_of(path, source):
    return [query_key(source.first_query(record)) for record in read_json(path)]


def test_chatmed_sample_every_row_accounted_for(project):
    report, outputs = convert(chatmed, CHATMED_SAMPLE, project)
    assert accounted(report)
    lines = [line for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert report["read"] == len(lines) == 71
    assert report["skipped"] == {"empty_after_strip": 1, "invalid_json": 1, "missing_field": 1,
                                 "non_string_field": 1, "not_an_object": 1}
    assert report["duplicates"] == 1 and report["eval"] == 5 and report["written"] == 60
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
    assert accounted(report) and report["read"] == 66
    assert report["notes"] == {"trailing_human_turn_dropped": 1}
    assert report["pii_masked"] == {"phone": 0, "id_card": 1, "email": 0}
    assert report["skipped"] == {"bad_role_order": 1, "empty_after_strip": 1, "missing_field": 1,
                                 "non_string_field": 1, "unknown_shape": 1}
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
    with pytest.raises(ConversionError, match="no row could be converted"):
        convert(chatmed, raw, project)
    assert list((project / "data").iterdir()) == []
    assert not (project / "dataset_info.json").exists()


def test_fatal_input_error_leaves_previous_outputs_untouched(project):
    convert(chatmed, CHATMED_SAMPLE, project)
    before = {p.name: p.read_bytes() for p in (project / "data").iterdir()}
    registry_before = (project / "dataset_info.json").read_bytes()
    lines = CHATMED_SAMPLE.read_bytes().split(b"\n")
    broken = project / "broken.jsonl"
    broken.write_bytes(b"\n".join(lines[:30] + ['{"query": "头疼"}'.encode("gbk")] + lines[30:]))
    with pytest.raises(InputError, match=r"broken\.jsonl:31: not UTF-8"):
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
    two, _ = convert(chatmed, big, project, workers=2)
    assert {p: p.read_bytes() for p in single} == single
    varying = ("seconds", "workers", "registry_changed")
    assert {k: v for k, v in one.items() if k not in varying} == {k: v for k, v in two.items() if k not in varying}


def test_outputs_identical_without_orjson(project, tmp_path, monkeypatch):
    report, outputs = convert(huatuo, HUATUO_SAMPLE, project)
    with_orjson = outputs.train.read_bytes()
    monkeypatch.setattr(jsoncodec, "orjson", None)
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    _, outputs2 = convert(huatuo, HUATUO_SAMPLE, other)
    assert outputs2.train.read_bytes() == with_orjson


def test_lone_surrogates_are_skipped_not_written(project):
    raw = write_lines(project / "s.jsonl", ['{"query": "ok", "response": "fine"}',
                                            '{"query": "bad \\ud800 text", "response": "x"}'])
    report, outputs = convert(chatmed, raw, project, eval_size=0)
    assert report["skipped"] == {"invalid_unicode": 1} and report["written"] == 1
    outputs.train.read_bytes().decode("utf-8")
