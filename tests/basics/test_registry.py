"""dataset_info.json: merged idempotently, user entries preserved, never half-written."""

import hashlib
import json

import pytest

from caretune.basics.registry import RegistryError, load_registry, register, relative_file_name

ENTRY = {"file_name": "data/multi-med.json", "formatting": "alpaca", "columns": {"query": "input"}}


def test_creates_then_is_idempotent(tmp_path):
    path = tmp_path / "dataset_info.json"
    assert register(path, {"multi-med": ENTRY}) is True
    before = path.read_bytes()
    assert register(path, {"multi-med": ENTRY}) is False
    assert path.read_bytes() == before


def test_user_entries_preserved_and_extra_keys_kept(tmp_path):
    path = tmp_path / "dataset_info.json"
    user = {
        "my_data": {"file_name": "mine.jsonl", "formatting": "sharegpt", "columns": {"messages": "c"}},
        "hub_data": {"hf_hub_url": "org/name", "split": "train"},
        "multi-med": {"file_name": "data/multi-med.json", "num_samples": 1000},
    }
    path.write_text(json.dumps(user, ensure_ascii=False), encoding="utf-8")
    register(path, {"multi-med": ENTRY, "multi-med-eval": {**ENTRY, "file_name": "data/multi-med-eval.json"}})
    merged = json.loads(path.read_text(encoding="utf-8"))
    assert merged["my_data"] == user["my_data"] and merged["hub_data"] == user["hub_data"]
    assert merged["multi-med"] == {**ENTRY, "num_samples": 1000}
    assert list(merged) == ["my_data", "hub_data", "multi-med", "multi-med-eval"]


def test_entry_pointing_elsewhere_is_never_clobbered(tmp_path):
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps({"multi-med": {"file_name": "someone/else.json"}}), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="'multi-med' already points at 'someone/else.json'.*--out NAME.json"):
        register(path, {"multi-med": ENTRY})
    assert path.read_bytes() == before


@pytest.mark.parametrize("content, line", [('{\n  "a": {"file_name": "x"},\n  oops\n}', 3), ("[1, 2]", 1)])
def test_malformed_registry_is_an_error_and_left_untouched(tmp_path, content, line):
    path = tmp_path / "dataset_info.json"
    path.write_text(content, encoding="utf-8")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(RegistryError, match=rf"dataset_info\.json:{line}: "):
        register(path, {"multi-med": ENTRY})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["dataset_info.json"]


def test_missing_registry_reads_as_empty(tmp_path):
    assert load_registry(tmp_path / "nope.json") == {}


def test_file_name_relative_to_the_registry_folder(tmp_path):
    registry = tmp_path / "dataset_info.json"
    assert relative_file_name(tmp_path / "data" / "x.json", registry) == "data/x.json"
    elsewhere = tmp_path.parent / "elsewhere.json"
    assert relative_file_name(elsewhere, registry) == str(elsewhere.resolve())
