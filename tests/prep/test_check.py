"""`caretune check` through LLaMA-Factory's own loader, with the real Qwen3 tokenizer."""

import json

import pytest
from click.testing import CliRunner

from caretune.cli import main
from caretune.prep.check import length_stats
from caretune.prep.lengths import percentile
from tests.helpers import CHATMED_SAMPLE, HUATUO_SAMPLE, read_json

pytestmark = pytest.mark.lf


def test_percentile_and_stats_by_hand():
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 50) == 7 and percentile([], 50) == 0
    stats = length_stats([10, 3000, 20, 2049, 2048], cutoff_len=2048)
    assert stats["over_cutoff"] == 2 and stats["max"] == 3000 and stats["p50"] == 2048


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    runner = CliRunner()
    for source, raw in (("chatmed", CHATMED_SAMPLE), ("huatuo", HUATUO_SAMPLE)):
        result = runner.invoke(
            main,
            [
                "convert",
                source,
                str(raw),
                "--data-dir",
                str(project / "data"),
                "--dataset-info",
                str(project / "dataset_info.json"),
            ],
        )
        assert result.exit_code == 0, result.output
    return project


def run_check(project, *args):
    return CliRunner().invoke(main, ["check", "--dataset-info", str(project / "dataset_info.json"), *args])


@pytest.fixture(scope="module")
def unreminded(tmp_path_factory):
    """The conversion reports of the same samples with --care-reminder off, by dataset name."""
    from converters import chatmed, huatuo
    from converters.options import Options
    from tests.helpers import convert_into

    project = tmp_path_factory.mktemp("unreminded")
    (project / "data").mkdir()
    reports = {}
    for source, raw in ((chatmed, CHATMED_SAMPLE), (huatuo, HUATUO_SAMPLE)):
        report, _ = convert_into(project, source, raw, eval_size=500, options=Options(care_reminder="off"))
        reports[report["dataset"]] = reports[report["eval_dataset"]] = report
    return reports


def test_check_reports_every_registered_dataset(converted, unreminded):
    result = run_check(converted, "--json")
    assert result.exit_code == 0, result.output
    results = {r["dataset"]: r for r in json.loads(result.stdout)}
    assert list(results) == ["multi-med", "multi-med-eval", "huatuo2-sft", "huatuo2-eval"]
    for name, report in (("multi-med", "multi-med"), ("huatuo2-sft", "huatuo2-sft")):
        conversion = read_json(converted / "data" / f"{report}.report.json")
        assert results[name]["rows"] == conversion["training"]["rows"]
        assert results[name]["dropped"] == 0 and results[name]["error"] is None
        # the care rules over what LLaMA-Factory loads agree with what the conversion counted
        for split, dataset in (("train", name), ("eval", conversion["eval_dataset"])):
            care = results[dataset]["care"]
            assert {k: care[k] for k in conversion["care"][split]} == conversion["care"][split]
            # the data's own share: what the same conversion without reminders counts as advising care
            assert care["advises_care_without_reminders"] == unreminded[dataset]["care"][split]["advises_care"]
        assert results[name]["care"]["advises_care_without_reminders"] < results[name]["care"]["advises_care"]
    tokens = results["multi-med"]["tokens"]
    # every ChatMed row carries the ~60-token instruction, so no row is short
    assert 60 < tokens["p50"] <= tokens["p90"] <= tokens["p99"] <= tokens["max"] < 2048
    assert tokens["over_cutoff"] == 0


def test_check_table_and_cutoff(converted):
    result = run_check(converted, "multi-med", "--cutoff-len", "150", "--sample", "20")
    assert result.exit_code == 0, result.output
    header, rule, row, *fitting, legend = result.stdout.strip().splitlines()
    assert fitting == ["multi-med: trains 61 of 61 answers; fitted to 2047 tokens: 0 rows dropped 0 old turns, 0 answers too long"]
    assert header.split()[-5:] == [">150", "care", "own", "care", "urgent"]
    fields = row.split()
    assert fields[0] == "multi-med" and fields[1] == "20" and int(fields[-4]) > 0
    assert fields[-3] == "100.0%" and fields[-2].endswith("%") and float(fields[-2][:-1]) < 100
    assert legend.startswith("rows: training rows (one per trained answer); care: conversations whose answers advise")


def test_rows_llamafactory_would_drop_fail_the_check(converted):
    registry = read_json(converted / "dataset_info.json")
    odd = converted / "data" / "hand-made.json"
    odd.write_text(
        json.dumps(
            [
                {"system": "s", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                {
                    "system": "s",
                    "conversations": [
                        {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"},
                        {"from": "human", "value": "q2"},
                    ],
                },
            ]
        ),
        encoding="utf-8",
    )
    registry["hand-made"] = {**registry["huatuo2-sft"], "file_name": "data/hand-made.json"}
    registry["missing"] = {**registry["huatuo2-sft"], "file_name": "data/missing.json"}
    (converted / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    result = run_check(converted, "hand-made", "missing", "not-registered", "--json")
    assert result.exit_code == 1
    results = {r["dataset"]: r for r in json.loads(result.stdout)}
    assert results["hand-made"]["rows"] == 2 and results["hand-made"]["dropped"] == 1
    assert "not found" in results["missing"]["error"]
    assert "not registered" in results["not-registered"]["error"]
    assert "check failed for: hand-made, missing, not-registered" in result.stderr


def test_check_without_registry_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["check", "--dataset-info", str(tmp_path / "dataset_info.json")])
    assert result.exit_code == 1 and "convert a dataset first" in result.output


def test_a_registered_set_not_built_yet_is_skipped_unless_named(converted, tmp_path):
    """The shipped registry names prefs-onpolicy, which `caretune prefs build` writes: a plain `check` failed on it
    before the preference stage had run (and so did `make demo`)."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(converted, project)
    built = ["multi-med", "multi-med-eval", "huatuo2-sft", "huatuo2-eval"]
    registry = {name: entry for name, entry in read_json(project / "dataset_info.json").items() if name in built}
    registry["prefs-onpolicy"] = {"file_name": "data/prefs-onpolicy.json", "ranking": True, "formatting": "sharegpt"}
    (project / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    plain = run_check(project, "--json")
    assert plain.exit_code == 0, plain.output[-2000:]
    assert "prefs-onpolicy: data/prefs-onpolicy.json is not built yet; skipped" in plain.stderr
    assert [r["dataset"] for r in json.loads(plain.stdout)] == built
    named = run_check(project, "prefs-onpolicy")
    assert named.exit_code == 1 and "prefs-onpolicy" in named.output
