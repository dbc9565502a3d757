"""The `caretune` command: fast help, one-line errors, exit codes, summaries."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from caretune.cli import main
from tests.helpers import CHATMED_SAMPLE, HUATUO_SAMPLE, ROOT, read_json


def test_help_does_not_import_torch_or_llamafactory():
    code = (
        "import sys; from caretune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'llamafactory', 'transformers', 'datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "HEAVY []" in out


def command_paths(group=main, prefix=()):
    """Every command under `caretune`, nested groups included, as argument lists."""
    import click

    for name, command in group.commands.items():
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


def test_every_subcommand_has_help():
    paths = list(command_paths())
    assert len(paths) >= 20 and ["recipes", "new"] in paths and ["convert", "chatmed"] in paths
    runner = CliRunner()
    for args in paths:
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and f"Usage: main {' '.join(args)}" in result.output, args
        summary = result.output.split("\n\n")[1].strip()
        assert len(summary) > 20, (args, summary)  # a real sentence, not a stub


def run(project, *args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_convert_prints_one_summary_line_and_registers(project, monkeypatch):
    monkeypatch.chdir(project)
    result = run(project, "convert", "chatmed", str(CHATMED_SAMPLE))
    assert result.exit_code == 0
    (line,) = result.stdout.strip().splitlines()  # one summary line
    assert line.startswith("chatmed: read 78 = train 61 + eval 6 + duplicates 1 + skipped 10")
    assert (
        "; wrapper stripped 1, care reminder added 2, emergency reminder added 1; 61 training rows train 61 of 61 answers" in line
    )
    assert "(fitted to 2047 tokens: 0 rows dropped old turns); train advises care 100.0%" in line
    assert line.endswith("; registered multi-med, multi-med-eval in dataset_info.json (updated); data card data/multi-med.card.md")
    again = run(project, "convert", "chatmed", str(CHATMED_SAMPLE))
    assert "(already up to date)" in again.output
    assert set(read_json(project / "dataset_info.json")) == {"multi-med", "multi-med-eval"}


def test_convert_json_report(project, monkeypatch):
    monkeypatch.chdir(project)
    result = run(project, "convert", "huatuo", str(HUATUO_SAMPLE), "--json", "--no-register", "--eval-size", "3")
    report = json.loads(result.output)
    assert report["eval"] == 3 and report["input"]["format"] == "json-array"
    assert not (project / "dataset_info.json").exists()
    assert (project / "data" / "huatuo2-sft.report.json").exists()


def test_custom_out_names_the_datasets(project, monkeypatch):
    monkeypatch.chdir(project)
    result = run(project, "convert", "chatmed", str(CHATMED_SAMPLE), "--out", "data/cm-small.json")
    assert result.exit_code == 0
    assert set(read_json(project / "dataset_info.json")) == {"cm-small", "cm-small-eval"}
    assert (project / "data" / "cm-small-eval.json").exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"query": "头疼", "response": "休息"}\n'.encode("gbk"), "in.jsonl:1: not UTF-8 text"),
        (b"query,response\n", "in.jsonl:1: not JSON Lines or a JSON array"),
        (b'[{"query": "a", "response": "b"},\n{"query": ', "in.jsonl:2: invalid JSON in array"),
    ],
)
def test_bad_input_is_one_line_error_and_no_output(project, monkeypatch, content, expected):
    monkeypatch.chdir(project)
    (project / "in.jsonl").write_bytes(content)
    result = CliRunner().invoke(main, ["convert", "chatmed", "in.jsonl"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0]
    assert [p.name for p in (project / "data").iterdir() if not p.name.endswith(".lock")] == []  # locks stay


def test_missing_file_is_a_usage_error(project, monkeypatch):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["convert", "chatmed", "nope.jsonl"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_fetch_offline_fails_fast_with_manual_instructions(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, ["fetch", "huatuo"])
    assert result.exit_code == 1
    assert "place it at data/raw/HuatuoGPT2-GPT4-SFT-140K.json" in result.output
    assert "caretune convert huatuo" in result.output


def test_fetch_unreachable_hub_fails_fast(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    result = CliRunner().invoke(main, ["fetch", "chatmed"])
    assert result.exit_code == 1 and "unreachable" in result.output
    assert "ChatMed_Consult-v0.3.json" in result.output


def test_an_output_outside_the_registrys_folder_is_registered_absolute_and_said(project, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(project)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "cm.json"
    result = run(project, "convert", "chatmed", str(CHATMED_SAMPLE), "--out", str(elsewhere), "--no-card")
    assert result.exit_code == 0
    assert read_json(project / "dataset_info.json")["cm"]["file_name"] == str(elsewhere)
    assert f"absolute path {elsewhere}" in result.stdout and "outside" in result.stdout


def test_options_that_contradict_each_other_are_refused_in_one_line(project, monkeypatch):
    monkeypatch.chdir(project)
    keep = CliRunner().invoke(main, ["convert", "chatmed", str(CHATMED_SAMPLE), "--filters", "none", "--keep", "short_answer"])
    assert keep.exit_code == 1 and "--filters none" in keep.output and len(keep.output.strip().splitlines()) == 1
    layout = CliRunner().invoke(main, ["convert", "huatuo", str(HUATUO_SAMPLE), "--layout", "walkthrough"])
    assert layout.exit_code == 1 and "ChatMed" in layout.output and "is not 'system'" not in layout.output
    assert not (project / "data" / "multi-med.json").exists() and not (project / "data" / "huatuo2-sft.json").exists()


def test_help_lists_the_commands_in_pipeline_order():
    from caretune.cli.base import PIPELINE_ORDER

    listed = [
        line.split()[0] for line in CliRunner().invoke(main, ["--help"]).output.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert listed == list(PIPELINE_ORDER)


@pytest.mark.lf  # reading the recipe takes LLaMA-Factory's defaults
def test_plan_takes_gpus_per_node_and_nodes(tmp_path, monkeypatch):
    from caretune.planning import plan as planning

    seen = {}

    def fake_plan(recipe, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(planning, "make_plan", fake_plan)
    recipe = ROOT / "recipes/qwen3-8b/lora_sft.yaml"
    for args, world in (([], 4), (["--gpus", "8"], 8), (["--gpus", "8", "--nodes", "2"], 16), (["--nodes", "2"], 8)):
        CliRunner().invoke(main, ["plan", str(recipe), *args])
        assert seen["gpus"] == world, args
