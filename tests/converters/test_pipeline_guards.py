"""A user's files are never clobbered: conversions refuse to overwrite their input or the registry,
refuse their own outputs as input, follow the umask, and keep the registry's mode."""

import json
import os
import stat

import pytest
from click.testing import CliRunner

from caretune.cli import main
from tests.helpers import CHATMED_SAMPLE, HUATUO_SAMPLE, read_json


def run(*args):
    return CliRunner().invoke(main, ["convert", *args, "--no-card"])


def test_output_over_the_input_is_refused_before_reading(project, monkeypatch):
    monkeypatch.chdir(project)
    raw = project / "raw.jsonl"
    raw.write_bytes(CHATMED_SAMPLE.read_bytes())
    result = run("chatmed", str(raw), "--out", str(raw), "--no-register")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "would overwrite the input" in result.output and len(result.output.strip().splitlines()) == 1
    assert raw.read_bytes() == CHATMED_SAMPLE.read_bytes()


def test_output_over_the_registry_is_refused(project, monkeypatch):
    monkeypatch.chdir(project)
    registry = project / "dataset_info.json"
    registry.write_text('{"mine": {"file_name": "mine.json"}}\n', encoding="utf-8")
    before = registry.read_bytes()
    result = run("chatmed", str(CHATMED_SAMPLE), "--out", str(registry), "--dataset-info", str(registry))
    assert result.exit_code == 1 and "would overwrite the registry" in result.output
    assert registry.read_bytes() == before


def test_a_conversions_own_output_is_refused_as_input(project, monkeypatch):
    monkeypatch.chdir(project)
    assert run("huatuo", str(HUATUO_SAMPLE)).exit_code == 0
    before = {p.name: p.read_bytes() for p in (project / "data").iterdir()}
    result = run("huatuo", "data/huatuo2-sft.json")
    assert result.exit_code == 1 and "is an output of an earlier conversion" in result.output
    assert {p.name: p.read_bytes() for p in (project / "data").iterdir()} == before


def test_outputs_follow_the_umask_and_the_registry_keeps_its_mode(project, monkeypatch):
    monkeypatch.chdir(project)
    registry = project / "dataset_info.json"
    registry.write_text("{}\n", encoding="utf-8")
    registry.chmod(0o664)
    previous = os.umask(0o022)
    try:
        assert run("chatmed", str(CHATMED_SAMPLE)).exit_code == 0
    finally:
        os.umask(previous)
    for path in (project / "data").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(registry.stat().st_mode) == 0o664
    assert "multi-med" in read_json(registry)


def test_registry_conflict_names_an_option_that_exists(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "dataset_info.json").write_text(json.dumps({"multi-med": {"file_name": "other.json"}}), encoding="utf-8")
    result = run("chatmed", str(CHATMED_SAMPLE))
    assert result.exit_code == 1 and "--name" not in result.output and "--out" in result.output


@pytest.mark.parametrize("option", ["--filters", "--care-reminder", "--layout"])
def test_bad_choices_are_one_line_errors(project, monkeypatch, option):
    monkeypatch.chdir(project)
    result = run("chatmed", str(CHATMED_SAMPLE), option, "bogus")
    assert result.exit_code == 2 and "Traceback" not in result.output and "bogus" in result.output
