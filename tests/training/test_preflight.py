"""Each preflight rule, triggered by a broken recipe, with its one-line message."""

import json
from pathlib import Path

import pytest

from caretune.recipe import RecipeError
from caretune.training.preflight import PreflightError, preflight
from tests.helpers import converted_workspace, edit_recipe

pytestmark = pytest.mark.lf


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from caretune.training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen3")


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model):
    """A project copy with converted sample data, the shipped recipes, and the tiny model and (empty) adapter
    folders where they expect them."""
    monkeypatch.chdir(converted_workspace(tmp_path))
    monkeypatch.setattr("caretune.training.recipe_checks.offline_without", lambda model: False)  # as if Qwen3-8B were cached
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "tiny-qwen3").symlink_to(tiny_model)
    for folder in ("tiny-qwen3", "qwen3-8b"):  # where the predict recipes expect the trained adapter
        (tmp_path / "saves" / folder / "lora" / "sft").mkdir(parents=True)
    return tmp_path


SFT = "recipes/tiny-qwen3/lora_sft.yaml"


def edit(path, **changes):
    return edit_recipe(path, **changes)


def test_shipped_recipes_pass(workspace):
    for recipe in (
        "recipes/tiny-qwen3/lora_sft.yaml",
        "recipes/tiny-qwen3/predict.yaml",
        "recipes/qwen3-8b/lora_sft_walkthrough.yaml",
        "recipes/qwen3-8b/predict.yaml",
    ):
        plan = preflight(recipe)
        assert plan.processes == 1 and plan.overrides == {}


def test_fast_recipe_needs_liger_and_fa2_needs_one_pack_per_device(workspace, monkeypatch):
    import importlib.util

    fast = "recipes/qwen3-8b/lora_sft.yaml"
    real_find_spec = importlib.util.find_spec
    installed = {"liger_kernel": False, "flash_attn": False}

    def find_spec(name, *args):
        if name in installed:
            return object() if installed[name] else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(PreflightError, match=r"lora_sft\.yaml: enable_liger_kernel needs the liger-kernel package"):
        preflight(fast)
    installed["liger_kernel"] = True
    assert not any("sdpa" in note for note in preflight(fast).notes)  # sdpa with 4 packs per device, as shipped
    edit(fast, flash_attn="fa2")
    with pytest.raises(PreflightError, match=r"neat_packing with flash_attn: fa2 takes per_device_train_batch_size: 1"):
        preflight(fast)
    edit(fast, per_device_train_batch_size=1)
    assert any("falls back to sdpa" in note for note in preflight(fast).notes)
    installed["flash_attn"] = True
    assert not any("sdpa" in note for note in preflight(fast).notes)


def test_unknown_key_with_suggestion(workspace):
    edit(SFT, lora_rnak=8)
    with pytest.raises(PreflightError, match=r"lora_sft\.yaml: unknown key 'lora_rnak' \(did you mean 'lora_rank'\?\)"):
        preflight(SFT)


def test_invalid_yaml_names_the_line(workspace):
    Path(SFT).write_text("stage: sft\nlora_rank: [8\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"lora_sft\.yaml:\d+: not valid YAML"):
        preflight(SFT)


def test_dataset_not_registered(workspace):
    edit(SFT, dataset="multi-med,cmedqa")
    with pytest.raises(PreflightError, match=r"dataset 'cmedqa' is not registered in dataset_info\.json"):
        preflight(SFT)


def test_dataset_file_missing_or_empty(workspace):
    Path("data/huatuo2-sft.json").unlink()
    with pytest.raises(PreflightError, match=r"dataset 'huatuo2-sft' points at data/huatuo2-sft\.json, which does not exist"):
        preflight(SFT)
    Path("data/huatuo2-sft.json").write_text("[]\n", encoding="utf-8")
    with pytest.raises(PreflightError, match=r"huatuo2-sft\.json has no rows"):
        preflight(SFT)


def test_template_mismatch_across_the_folder(workspace):
    edit("recipes/tiny-qwen3/chat.yaml", template="chatml")
    with pytest.raises(PreflightError, match=r"template is 'qwen3' but recipes/tiny-qwen3/chat\.yaml has 'chatml'.*<think>"):
        preflight(SFT)


def test_a_hybrid_qwen3_is_never_put_into_thinking_mode_unasked(workspace):
    """The old `qwen3_nothink` setup (no empty think block: the base model thinks at inference) is refused in one
    line, in every recipe of the folder alike; --allow-thinking accepts it."""
    tasks = [path.stem for path in Path("recipes/tiny-qwen3").glob("*.yaml")]
    for task in tasks:
        edit(f"recipes/tiny-qwen3/{task}.yaml", template="qwen3_nothink")
    refused = r"^[^\n]*lora_sft\.yaml: template qwen3_nothink never adds the empty think block.*--allow-thinking [^\n]*$"
    with pytest.raises(PreflightError, match=refused):
        preflight(SFT)
    assert preflight(SFT, allow_thinking=True).processes == 1
    for task in tasks:
        edit(f"recipes/tiny-qwen3/{task}.yaml", template="qwen3", enable_thinking=True)
    with pytest.raises(PreflightError, match=r"without enable_thinking: false puts hybrid .* into thinking mode"):
        preflight(SFT)


def test_history_rendered_unlike_serving_is_a_warning(workspace):
    assert not [note for note in preflight(SFT).notes if "warning" in note]
    edit(SFT, mask_history=False, gradient_checkpointing=False)
    notes = preflight(SFT).notes
    assert any("mask_history is not true" in note and "set mask_history: true" in note for note in notes), notes
    assert any(note.startswith(f"warning: {SFT}: gradient_checkpointing is false, but LLaMA-Factory") for note in notes)


def test_enable_thinking_mismatch(workspace):
    edit("recipes/tiny-qwen3/export.yaml", enable_thinking=None)
    with pytest.raises(PreflightError, match=r"enable_thinking is False but recipes/tiny-qwen3/export\.yaml has None"):
        preflight(SFT)


def test_predict_with_generate_and_zero3(workspace):
    edit("recipes/tiny-qwen3/predict.yaml", deepspeed="recipes/deepspeed/ds_z3.json")
    with pytest.raises(PreflightError, match=r"predict_with_generate does not work with DeepSpeed ZeRO-3"):
        preflight("recipes/tiny-qwen3/predict.yaml")


def test_deepspeed_file_missing_or_broken(workspace):
    edit(SFT, deepspeed="recipes/deepspeed/nope.json")
    with pytest.raises(PreflightError, match=r"deepspeed file 'recipes/deepspeed/nope\.json' does not exist"):
        preflight(SFT)
    Path("recipes/deepspeed/broken.json").write_text('{\n  "zero_optimization": {\n    "stage": 2,\n  }\n}', encoding="utf-8")
    edit(SFT, deepspeed="recipes/deepspeed/broken.json")
    with pytest.raises(PreflightError, match=r"broken\.json:4: not valid JSON"):
        preflight(SFT)


def test_more_gpus_than_visible(workspace, monkeypatch):
    monkeypatch.setattr("caretune.training.preflight.visible_gpu_count", lambda: 2)
    with pytest.raises(PreflightError, match=r"4 GPUs requested but 2 visible"):
        preflight(SFT, processes=4)
    assert preflight(SFT, processes=2).processes == 2


def test_finished_run_refused_unless_overwrite(workspace):
    out = Path("saves/tiny-qwen3/lora/sft")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_results.json").write_text(json.dumps({"train_loss": 1.0}), encoding="utf-8")
    with pytest.raises(PreflightError, match=r"holds a finished run; pass --overwrite"):
        preflight(SFT)
    plan = preflight(SFT, overwrite=True)
    assert plan.move_aside[0] == out and plan.move_aside[1].name.startswith("sft.old-")
    assert out.exists()  # preflight itself moves nothing


def test_unfinished_run_resumes_from_last_checkpoint(workspace):
    out = Path("saves/tiny-qwen3/lora/sft")
    for step in (10, 20, 5):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}", encoding="utf-8")
    (out / "checkpoint-30").mkdir()  # incomplete: no trainer_state.json
    plan = preflight(SFT)
    assert plan.overrides == {"resume_from_checkpoint": str(out / "checkpoint-20")}
    assert any("resuming" in note for note in plan.notes)
    assert preflight(SFT, fresh=True).move_aside is not None


def test_report_to_an_integration_that_is_not_installed(workspace, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("tensorboard", "tensorboardX") else real_find_spec(name, *args),
    )
    edit(SFT, report_to="tensorboard")
    with pytest.raises(
        PreflightError,
        match=r"lora_sft\.yaml: report_to: tensorboard needs the tensorboard package "
        r"\(pip install tensorboard\), or set report_to: none",
    ):
        preflight(SFT)
    edit(SFT, report_to=["none"])
    assert preflight(SFT).processes == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"learning_rate": "fast"}, r"learning_rate must be a number, not 'fast'"),
        ({"max_steps": "twenty"}, r"max_steps must be an integer, not 'twenty'"),
        ({"finetuning_type": "lorra"}, r"finetuning_type must be one of lora, oft, freeze, full, not 'lorra'"),
        ({"bf16": "yes"}, r"bf16 must be true or false, not 'yes'"),
        ({"model_name_or_path": "/nonexistent/model"}, r"model_name_or_path /nonexistent/model does not exist"),
    ],
)
def test_values_are_checked_not_only_keys(workspace, changes, message):
    edit(SFT, **changes)
    with pytest.raises(PreflightError, match=rf"lora_sft\.yaml: {message}"):
        preflight(SFT)


def test_a_broken_sibling_is_a_warning_naming_it(workspace):
    Path("recipes/tiny-qwen3/scratch.yaml").write_text("template: [unclosed\n", encoding="utf-8")
    plan = preflight(SFT)
    assert any(
        note.startswith("warning: recipes/tiny-qwen3/scratch.yaml:") and "skipped in the template check" in note
        for note in plan.notes
    )


def test_preflight_command_agrees_with_train_about_a_finished_run(workspace):
    from click.testing import CliRunner

    from caretune.cli import main

    output = Path("saves/tiny-qwen3/lora/sft")
    (output / "all_results.json").write_text("{}", encoding="utf-8")
    (output / "trainer_state.json").write_text('{"global_step": 20, "max_steps": 20}', encoding="utf-8")
    for command in ("preflight", "train"):
        result = CliRunner().invoke(main, [command, SFT])
        assert result.exit_code == 1 and "holds a finished run; pass --overwrite" in result.output, (command, result.output)
    assert "ready (1 CPU process(es) per node)" in CliRunner().invoke(main, ["preflight", "recipes/tiny-qwen3/predict.yaml"]).output


def test_an_uncached_hub_model_is_refused_offline(workspace, monkeypatch):
    monkeypatch.undo()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    edit(SFT, model_name_or_path="caretune-tests/never-downloaded")
    with pytest.raises(
        PreflightError,
        match=r"model_name_or_path caretune-tests/never-downloaded is not in the Hugging Face "
        r"cache and the hub is off",
    ):
        preflight(SFT)


def test_every_problem_is_reported_in_one_run_numbered(workspace):
    import shutil

    shutil.rmtree("saves/tiny-qwen3/lora/sft")  # the adapter the predict recipe names is missing ...
    edit("recipes/tiny-qwen3/predict.yaml", deepspeed="recipes/deepspeed/ds_z3.json")  # ... and ZeRO-3 cannot generate
    with pytest.raises(PreflightError) as raised:
        preflight("recipes/tiny-qwen3/predict.yaml")
    lines = str(raised.value).splitlines()
    assert lines[0] == "recipes/tiny-qwen3/predict.yaml: 2 problems"
    assert lines[1].startswith("  1. ") and "adapter" in lines[1]
    assert lines[2].startswith("  2. ") and "predict_with_generate does not work with DeepSpeed ZeRO-3" in lines[2]


def _long_consultation(path):
    """One consultation of 8 turns, about 1,000 tokens: over the tiny recipe's cutoff (512) as one row."""
    answer = "，".join(f"第{i}条建议" for i in range(25)) + "。请遵医嘱。"
    turns = [{"from": r, "value": t} for n in range(8) for r, t in (("human", f"第{n}次复诊，胃还是疼，怎么办？"), ("gpt", answer))]
    path.write_text(json.dumps({"conversations": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def test_rows_llamafactory_would_cut_are_refused_until_fitted(workspace):
    """LLaMA-Factory truncates a row longer than the cutoff turn by turn, newest first: an older turn is cut part-way
    and the system prompt goes first. Preflight measures a dataset its conversion did not fit, and refuses it."""
    from caretune.prep.fitting import TemplateTokenCounter
    from converters import huatuo
    from converters.options import Options
    from tests.helpers import convert_into

    raw = _long_consultation(workspace / "long.jsonl")
    # not fitted (as --cutoff-len 0): 8 rows, one per answer, the last 6 over the cutoff
    convert_into(workspace, huatuo, raw, eval_size=0, options=Options(cutoff_len=None))
    with pytest.raises(PreflightError, match=r"6 row\(s\) of dataset 'huatuo2-sft' are longer than cutoff_len 512") as err:
        preflight(SFT)
    assert "--cutoff-len 512" in str(err.value)
    report, _ = convert_into(workspace, huatuo, raw, eval_size=0, options=Options(cutoff_len=512, count=TemplateTokenCounter()))
    assert report["training"]["fitted_rows"] > 0
    preflight(SFT)  # fitted: every row whole


def test_a_stale_mix_is_a_warning_naming_the_sets(workspace):
    from caretune.prep.mixing import mix_shares
    from converters import general
    from tests.helpers import SAMPLE, convert_into

    convert_into(workspace, general, SAMPLE / "general_zh_sample.jsonl", eval_size=2)
    mixed = {"dataset": "multi-med,huatuo2-sft,general-zh", "mix_strategy": "interleave_over"}
    stale = preflight(edit(SFT, **mixed, interleave_probs="0.45,0.45,0.1"))
    (warning,) = [note for note in stale.notes if "interleave_probs" in note]
    assert "multi-med 0.4500 (rows give" in warning and "huatuo2-sft" in warning and "general-zh 0.1000" in warning
    rows = [json.loads((workspace / f"data/{n}.report.json").read_text())["training"]["rows"] for n in ("multi-med", "huatuo2-sft")]
    fresh = ",".join(str(p) for p in mix_shares(rows, 0.1))
    assert not [note for note in preflight(edit(SFT, **mixed, interleave_probs=fresh)).notes if "interleave_probs" in note]


DPO = "recipes/tiny-qwen3/dpo.yaml"


@pytest.fixture
def preference_workspace(workspace):
    """The workspace with the shipped preference sample converted (prefs-med) and standing in for the on-policy set."""
    from caretune.basics.registry import register
    from converters import prefs
    from tests.helpers import SAMPLE, convert_into

    convert_into(workspace, prefs, SAMPLE / "prefs_med_sample.jsonl", eval_size=2)
    Path("data/prefs-onpolicy.json").write_bytes(Path("data/prefs-med.json").read_bytes())
    register("dataset_info.json", {"prefs-onpolicy": {"file_name": "data/prefs-onpolicy.json", **prefs.registry_entry()}})
    return workspace


def test_dpo_from_an_sft_adapter_needs_a_new_adapter_so_the_reference_is_the_sft_model(preference_workspace):
    preflight(DPO)  # the shipped recipe: create_new_adapter, ZeRO off
    with pytest.raises(
        PreflightError, match=r"without create_new_adapter.*pre-SFT base.*create_new_adapter: true.*ref_model_adapters"
    ):
        preflight(edit(DPO, create_new_adapter=None))
    preflight(edit(DPO, create_new_adapter=None, pref_loss="orpo"))  # no reference model: nothing to get wrong
    preflight(
        edit(
            DPO,
            create_new_adapter=None,
            pref_loss="sigmoid",
            ref_model=".cache/tiny-qwen3",
            ref_model_adapters="saves/tiny-qwen3/lora/sft",
        )
    )


def test_dpo_under_zero3_cannot_merge_the_sft_adapter(preference_workspace):
    with pytest.raises(
        PreflightError, match=r"DeepSpeed ZeRO-3 cannot merge adapter_name_or_path saves/tiny-qwen3/lora/sft.*ds_z2"
    ):
        preflight(edit(DPO, deepspeed="recipes/deepspeed/ds_z3.json"))


def test_preference_data_and_the_stage_must_agree_before_launch(preference_workspace):
    with pytest.raises(
        PreflightError, match=r"dataset 'prefs-med' holds preference pairs \(ranking: true\), which stage: sft cannot"
    ):
        preflight(edit(SFT, dataset="multi-med,prefs-med"))
    with pytest.raises(PreflightError, match=r"dataset 'multi-med' holds single answers, not preference pairs; stage: dpo"):
        preflight(edit(DPO, dataset="multi-med"))
    with pytest.raises(PreflightError, match=r"'multi-med' has no kto_tag column"):
        preflight(edit(DPO, stage="kto", dataset="multi-med"))


def test_dpo_needs_its_sft_adapter(preference_workspace):
    import shutil

    shutil.rmtree("saves/tiny-qwen3/lora/sft")
    with pytest.raises(PreflightError, match=r"adapter_name_or_path saves/tiny-qwen3/lora/sft does not exist; train it first"):
        preflight(DPO)


def test_pairs_longer_than_the_cutoff_are_refused_for_dpo(preference_workspace):
    """LLaMA-Factory's pairwise processor cuts a long pair's prompt from its end, the question first."""
    rows = json.loads(Path("data/prefs-onpolicy.json").read_text(encoding="utf-8"))
    rows[0]["rejected"]["value"] = "很长的回答。" * 200
    Path("data/prefs-onpolicy.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(PreflightError, match=r"1 pair\(s\) of dataset 'prefs-onpolicy' are longer than cutoff_len 512.*question"):
        preflight(DPO)
