"""The recipe model and the run layout every stage takes its paths from."""

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from caretune.cli import main
from caretune.constants import TRAINER_LOG
from caretune.recipe import Recipe, RecipeError, RunDir, load_recipe, names_in

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, args: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("value", "names"),
    [(None, []), ("a", ["a"]), (" a, b ,,c", ["a", "b", "c"]), (["a", " b", ""], ["a", "b"])],
)
def test_names_in_reads_comma_separated_and_list_keys(value, names):
    assert names_in(value) == names


def test_a_broken_recipe_is_one_line_naming_the_file_and_line(tmp_path):
    with pytest.raises(RecipeError, match=r"nope\.yaml: no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: sft\nlora_rank: [8\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"broken\.yaml:3: not valid YAML"):
        load_recipe(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- stage\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"listed\.yaml:1: a recipe is a mapping"):
        load_recipe(listed)


def test_the_run_layout():
    run = RunDir.tuned("qwen3-8b")
    assert run.root == Path("saves/qwen3-8b/lora")
    assert (run.train, run.predict) == (run.root / "sft", run.root / "predict")
    assert (run.task("lora_sft"), run.task("predict")) == (run.train, run.predict)
    assert (run.mcq(), run.mcq("medical"), run.mcq("general")) == (run.root / "mcq", run.root / "mcq", run.root / "mcq-general")
    assert run.judged("rubrics_zh") == run.root / "judge" / "rubrics_zh"
    assert RunDir.base("qwen3-8b").root == Path("saves/qwen3-8b/base")


def test_a_training_folder_stands_for_its_run(tmp_path):
    run = RunDir(tmp_path / "lora")
    run.train.mkdir(parents=True)
    (run.train / TRAINER_LOG).write_text("", encoding="utf-8")
    assert RunDir.holding(run.train) == run
    assert RunDir.holding(run.root) == run


def test_every_shipped_recipe_writes_where_the_run_layout_says():
    for folder in ("qwen3-8b", "tiny-qwen3"):
        run = RunDir.tuned(folder)
        recipes = {task: Recipe.load(ROOT / "recipes" / folder / f"{task}.yaml") for task in ("lora_sft", "predict", "chat")}
        assert recipes["lora_sft"].output_dir == run.train
        assert recipes["predict"].output_dir == run.predict
        assert {Path(recipes[task].adapter) for task in ("predict", "chat")} == {run.train}
        assert {recipe.run_dir for recipe in recipes.values()} == {run}


def test_the_run_is_the_adapters_whatever_the_output_dir(tmp_path):
    """A recipe's results belong to the model it runs: its adapter's run (the last of several), not where its
    output_dir happens to point."""
    recipe = Recipe(tmp_path / "r.yaml", {"adapter_name_or_path": "saves/m/lora/sft", "output_dir": "elsewhere/predict"})
    assert recipe.run_dir == RunDir.tuned("m")
    several = Recipe(tmp_path / "r.yaml", {"adapter_name_or_path": "saves/a/lora/sft, saves/m/lora/sft"})
    assert (
        several.run_dir == Recipe(tmp_path / "r.yaml", {"adapter_name_or_path": ["saves/a/lora/sft", "saves/m/lora/sft"]}).run_dir
    )
    assert several.run_dir == RunDir.tuned("m")
    assert Recipe(tmp_path / "r.yaml", {"output_dir": "saves/m/base/predict"}).run_dir == RunDir.base("m")


def test_a_base_copy_drops_the_adapter_and_writes_under_the_base_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predict = write(
        Path("recipes/m/predict.yaml"),
        {"model_name_or_path": "x", "adapter_name_or_path": "saves/m/lora/sft", "output_dir": "saves/m/lora/predict"},
    )
    chat = write(Path("recipes/m/chat.yaml"), {"model_name_or_path": "x", "adapter_name_or_path": "saves/m/lora/sft"})
    copy = Recipe.load(predict).base_copy()
    assert copy.path == Path("saves/m/base/predict.yaml")
    assert load_recipe(copy.path) == {"model_name_or_path": "x", "output_dir": "saves/m/base/predict"}
    assert copy.run_dir == RunDir.base("m")
    chat_copy = Recipe.load(chat).base_copy()
    assert chat_copy.adapter is None and chat_copy.output_dir is None
    assert Recipe.load(chat_copy.path).run_dir == RunDir.base("m")  # no output_dir, no adapter: the base run


def test_runs_base_copy_and_report_take_the_layout_from_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predict = write(
        Path("recipes/m/predict.yaml"),
        {"model_name_or_path": "x", "adapter_name_or_path": "saves/m/lora/sft", "output_dir": "saves/m/lora/predict"},
    )
    result = CliRunner().invoke(main, ["runs", "base-copy", str(predict)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "saves/m/base/predict.yaml"
    assert "adapter_name_or_path" not in load_recipe(result.output.strip())
    for run in (RunDir.base("m"), RunDir.tuned("m")):
        run.root.mkdir(parents=True, exist_ok=True)
    result = CliRunner().invoke(main, ["report", "--recipe", str(predict), "--out", "report"])
    assert result.exit_code == 0, result.output
    report = Path("report/report.md").read_text(encoding="utf-8")
    assert "saves/m/base" in report and "saves/m/lora" in report
    refused = CliRunner().invoke(main, ["report"])
    assert refused.exit_code == 2 and "give RUN_DIRS or --recipe RECIPE" in refused.output
    shutil.rmtree(RunDir.base("m").root)
    missing = CliRunner().invoke(main, ["report", "--recipe", str(predict), "--out", "report"])
    assert missing.exit_code == 2 and "no run folder saves/m/base yet" in missing.output


def test_bytes_that_are_not_utf8_or_an_output_dir_that_is_not_a_path_are_one_line(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(RecipeError, match=r"binary\.yaml: not UTF-8 text"):
        load_recipe(binary)
    odd = write(tmp_path / "recipes" / "m" / "odd.yaml", {"output_dir": [1, 2]})
    with pytest.raises(RecipeError, match=r"odd\.yaml: output_dir must be a folder path, not \[1, 2\]"):
        Recipe.load(odd).run_dir
