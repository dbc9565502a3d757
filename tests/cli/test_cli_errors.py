"""One error path: every user-caused failure of every subcommand is one line and exit 1, never a traceback."""

import os
import subprocess
import sys

import pytest

from tests.helpers import CHATMED_SAMPLE, ROOT, converted_workspace, edit_recipe, run_caretune


def assert_one_line_error(done, *expected):
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return converted_workspace(tmp_path_factory.mktemp("errors"))


def edited(workspace, name, source, **changes):
    edit_recipe(workspace / source, workspace / name, **changes)
    return name


@pytest.mark.lf  # the workspace fits its rows with LLaMA-Factory's template
@pytest.mark.parametrize("registry_text", ['{"multi-med": {"file_name": "data/multi-', "[1, 2]"])
@pytest.mark.slow
def test_preflight_on_a_truncated_or_list_registry(tmp_path, registry_text):
    workspace = converted_workspace(tmp_path)
    assert run_caretune(workspace, "tiny-model").returncode == 0
    (workspace / "dataset_info.json").write_text(registry_text, encoding="utf-8")
    assert_one_line_error(run_caretune(workspace, "preflight", "recipes/tiny-qwen3/lora_sft.yaml"), "dataset_info.json")


@pytest.mark.parametrize(
    "changes, key", [({"max_steps": "twenty"}, "max_steps"), ({"per_device_train_batch_size": -1}, "per_device_train_batch_size")]
)
def test_plan_with_a_bad_value(workspace, changes, key):
    recipe = edited(workspace, f"bad-{key}.yaml", "recipes/tiny-qwen3/lora_sft.yaml", **changes)
    assert_one_line_error(run_caretune(workspace, "plan", recipe), key)


@pytest.mark.slow
def test_commands_before_training_name_the_missing_model_or_adapter(workspace):
    for command in (
        ["eval", "recipes/tiny-qwen3/predict.yaml"],
        ["chat", "recipes/tiny-qwen3/chat.yaml", "--query", "头痛"],
        ["export", "recipes/tiny-qwen3/export.yaml"],
    ):
        assert_one_line_error(
            run_caretune(workspace, *command), "model_name_or_path .cache/tiny-qwen3 does not exist", "caretune tiny-model"
        )
    assert run_caretune(workspace, "tiny-model").returncode == 0
    for command in (
        ["eval", "recipes/tiny-qwen3/predict.yaml"],
        ["chat", "recipes/tiny-qwen3/chat.yaml", "--query", "头痛"],
        ["export", "recipes/tiny-qwen3/export.yaml"],
        ["api", "recipes/tiny-qwen3/chat.yaml"],
    ):
        assert_one_line_error(
            run_caretune(workspace, *command), "adapter_name_or_path saves/tiny-qwen3/lora/sft does not exist", "train it first"
        )


def test_an_empty_question_is_refused(workspace):
    for query in ("", "   "):
        assert_one_line_error(run_caretune(workspace, "chat", "recipes/tiny-qwen3/chat.yaml", "--query", query), "--query is empty")


@pytest.mark.parametrize(
    "command", [["chat", "--query", "头痛"], ["api"], ["mcq", "--source", str(ROOT / "data/sample/mcq")], ["eval"], ["export"]]
)
def test_a_broken_recipe_is_one_line_for_every_command(workspace, command):
    (workspace / "broken.yaml").write_text("model_name_or_path: [unclosed\n", encoding="utf-8")
    base = ["--base"] if command[0] in ("mcq", "eval") else []
    assert_one_line_error(run_caretune(workspace, command[0], "broken.yaml", *command[1:], *base), "broken.yaml:")


def test_a_write_without_permission_is_one_line(project, monkeypatch):
    """Tests may run as root, where permissions do not bite: the refusal is simulated at the file system call."""
    import tempfile

    from click.testing import CliRunner

    from caretune.cli import main

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.chdir(project)
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    result = CliRunner().invoke(main, ["convert", "chatmed", str(CHATMED_SAMPLE), "--no-card"])
    assert result.exit_code == 1 and result.exception is not None and "Traceback" not in result.output
    assert "permission denied" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.lf  # the workspace fits its rows with LLaMA-Factory's template
@pytest.mark.slow
def test_eval_on_a_registry_conflict(tmp_path):
    import json

    from caretune.evaluation.evaluate import EMERGENCY_DATASET

    workspace = converted_workspace(tmp_path)
    registry = workspace / "dataset_info.json"
    entries = json.loads(registry.read_text(encoding="utf-8"))
    entries[EMERGENCY_DATASET] = {"file_name": "somewhere/else.json"}
    registry.write_text(json.dumps(entries), encoding="utf-8")
    assert run_caretune(workspace, "tiny-model").returncode == 0
    done = run_caretune(workspace, "eval", "recipes/tiny-qwen3/predict.yaml", "--base")
    assert_one_line_error(done, f"entry '{EMERGENCY_DATASET}' already points at")


def test_an_unwritable_registry_is_refused_before_any_output_is_replaced(project, monkeypatch):
    from click.testing import CliRunner

    from caretune.cli import main

    monkeypatch.chdir(project)
    assert CliRunner().invoke(main, ["convert", "chatmed", str(CHATMED_SAMPLE), "--no-card"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (project / "data").iterdir()}
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if str(path).endswith("dataset_info.json") and mode & os.W_OK else real_access(path, mode),
    )
    result = CliRunner().invoke(main, ["convert", "chatmed", str(CHATMED_SAMPLE), "--eval-size", "3", "--no-card"])
    assert result.exit_code == 1, result.output
    assert "dataset_info.json: not writable (--dataset-info)" in result.output
    assert {p.name: p.read_bytes() for p in (project / "data").iterdir()} == before


def test_package_data_is_found_from_a_non_editable_install(tmp_path):
    """`caretune eval`'s emergency prompts and bench's length profile ship inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(ROOT)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            *map(str, wheel_dir.glob("caretune-*.whl")),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import caretune, json; from pathlib import Path\n"
        "assert Path(caretune.__file__).is_relative_to(Path(__import__('sys').argv[1])), caretune.__file__\n"
        "from caretune.evaluation.evaluate import EMERGENCY_FILE, register_emergency_set\n"
        "from caretune.prep.profiles import load_profile\n"
        "assert len(json.loads(EMERGENCY_FILE.read_text(encoding='utf-8'))) == 22 and len(load_profile('chatmed')) == 101\n"
        "register_emergency_set(Path('.'))\n"
        "entry = json.loads(Path('dataset_info.json').read_text(encoding='utf-8'))['medical-emergency']\n"
        "assert Path(entry['file_name']).resolve() == EMERGENCY_FILE.resolve(), entry\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "command, expected",
    [
        (["check", "--dataset-info", "broken.json"], "broken.json:2: malformed JSON"),
        (["fetch", "chatmed", "--dest", "downloads"], "HF_HUB_OFFLINE is set"),
        (["bench", "--variant", "nope"], "unknown variant 'nope'"),
        (["webui", "--host", "0.0.0.0"], "refusing to bind 0.0.0.0 without API_KEY"),
        (["tiny-model", "broken.json/tiny"], "broken.json: File exists; choose another path"),
        (["train", "nonexistent.yaml"], "nonexistent.yaml: no such recipe"),
        (["preflight", "broken.json"], "broken.json:"),
        (["convert", "huatuo", "broken.json"], "broken.json: no row could be converted"),
        (["report", "broken.json"], "broken.json"),
    ],
)
def test_every_subcommand_answers_bad_input_in_one_line(tmp_path, command, expected):
    (tmp_path / "broken.json").write_text('{"a": \n', encoding="utf-8")
    done = run_caretune(tmp_path, *command, env={"API_KEY": ""}, timeout=120)  # an empty key is no key
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr[-2000:]  # 2: click's usage errors
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-2000:]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["convert", "chatmed", "missing.jsonl"], "File 'missing.jsonl' does not exist. (see `"),
        (["nonexistent"], "No such command 'nonexistent'. (see `"),
        (["recipes", "new", "--model", "Qwen/Qwen3-8B", "--gpus", "many"], "'many' is not a valid integer range"),
        (["api", "recipes/tiny-qwen3/chat.yaml", "--max-queue", "-1"], "--max-queue"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line_and_exit_2(args, expected):
    done = run_caretune(ROOT, *args, timeout=60)
    assert done.returncode == 2 and "Usage:" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and expected in done.stderr, done.stderr
    assert done.stderr.strip().endswith(" --help`)")  # the command's own help, e.g. `caretune convert chatmed --help`
