"""The rules every recipe folder keeps, checked on whatever is shipped and on edited copies; `caretune recipes --check`
names each broken rule with its file."""

from click.testing import CliRunner

from caretune.cli import main
from caretune.recipe import disagreements
from caretune.recipe_folders.generator import drift
from caretune.recipe_folders.rules import invariant_problems
from tests.helpers import ROOT, edited_copy


def test_shipped_recipes_keep_the_rules():
    """Whatever the shipped YAML says now (edits included), the rules hold."""
    assert invariant_problems(ROOT) == []


def test_generated_recipes_keep_the_rules(generated):
    assert invariant_problems(generated) == []


def test_an_edited_learning_rate_keeps_the_rules(tmp_path):
    root = edited_copy(tmp_path, {"recipes/qwen3-8b/lora_sft.yaml": [(r"^learning_rate: .*$", "learning_rate: 3.0e-05")]})
    assert invariant_problems(root) == []
    assert "recipes/qwen3-8b/lora_sft.yaml" in drift(root)  # `caretune recipes --check` reports the edit


def test_broken_rules_are_named_with_their_file(tmp_path, generated):
    root = edited_copy(
        tmp_path,
        {
            "recipes/qwen3-8b/chat.yaml": [(r"^template: qwen3 ", "template: chatml ")],
            "recipes/qwen3-8b/lora_sft.yaml": [(r"^per_device_train_batch_size: 4", "per_device_train_batch_size: 8")],
            "recipes/qwen3-8b/predict.yaml": [
                (r"^eval_dataset: multi-med-eval,huatuo2-eval", "eval_dataset: multi-med-eval,nope"),
                (r"^adapter_name_or_path: saves/qwen3-8b/lora/sft", "adapter_name_or_path: saves/x"),
            ],
            "recipes/qwen3-8b/lora_sft_walkthrough.yaml": [
                (r"^deepspeed: recipes/deepspeed/ds_z2.json", "deepspeed: recipes/deepspeed/gone.json")
            ],
            "recipes/tiny-qwen3/export.yaml": [(r"^### model", "### model\n- not: a mapping")],
        },
        source=generated,
    )  # the generator's recipes, whatever edits the shipped ones carry
    problems = invariant_problems(root)
    expected = [
        "recipes/qwen3-8b: template differs between recipes",
        "recipes/qwen3-8b/lora_sft.yaml: the comment says effective batch = 4 x 4 x 1 but per_device_train_batch_size is 8",
        "recipes/qwen3-8b/predict.yaml: eval_dataset names nope, not registered in dataset_info.json",
        "recipes/qwen3-8b/predict.yaml: adapter_name_or_path saves/x is not what a training recipe here trains",
        "recipes/qwen3-8b/lora_sft_walkthrough.yaml: deepspeed config recipes/deepspeed/gone.json does not exist",
        "recipes/tiny-qwen3/export.yaml:7: not valid YAML",
    ]
    for start in expected:
        assert sum(problem.startswith(start) for problem in problems) == 1, (start, problems)
    assert len(problems) == len(expected), problems


def test_gradient_checkpointing_must_say_what_training_does(tmp_path, generated):
    """LLaMA-Factory checkpoints unless disable_gradient_checkpointing is true (tests/test_lf.py shows it), and
    transformers' Trainer checkpoints whenever gradient_checkpointing is true: a recipe saying otherwise is named."""
    key = r"^gradient_checkpointing: true$"
    root = edited_copy(
        tmp_path,
        {
            "recipes/tiny-qwen3/lora_sft.yaml": [(key, "gradient_checkpointing: false")],  # what it said before
            "recipes/qwen3-8b/dpo.yaml": [(key, "gradient_checkpointing: true\ndisable_gradient_checkpointing: true")],
            "recipes/qwen3-8b/lora_sft.yaml": [(key, "gradient_checkpointing: false\ndisable_gradient_checkpointing: true")],
        },
        source=generated,
    )
    problems = invariant_problems(root)
    expected = [
        "recipes/qwen3-8b/dpo.yaml: gradient_checkpointing is true, so the trainer checkpoints",
        "recipes/tiny-qwen3/lora_sft.yaml: gradient_checkpointing is false, but LLaMA-Factory checkpoints",
    ]
    assert len(problems) == len(expected) and all(any(p.startswith(e) for p in problems) for e in expected), problems


def test_thinking_rules_are_named_with_their_file(tmp_path, generated):
    nothink = [(r"^template: qwen3 ", "template: qwen3_nothink ")]
    root = edited_copy(
        tmp_path,
        {
            **{f"recipes/tiny-qwen3/{task}.yaml": nothink for task in ("lora_sft", "predict", "chat", "export")},
            "recipes/qwen3-8b/lora_sft.yaml": [(r"^mask_history: true", "mask_history: false")],
        },
        source=generated,
    )
    problems = invariant_problems(root)
    assert len([p for p in problems if "qwen3_nothink never adds the empty think block" in p]) == 4, problems
    assert [p for p in problems if "mask_history" in p] == [
        next(p for p in problems if p.startswith("recipes/qwen3-8b/lora_sft.yaml: mask_history is not true"))
    ]


def test_an_absent_key_disagrees_with_a_set_one():
    """LLaMA-Factory reads an absent enable_thinking as true: beside a recipe that says false, the prompts differ."""
    found = disagreements({"a": {"template": "qwen3", "enable_thinking": False}, "b": {"template": "qwen3"}})
    assert found == [("enable_thinking", {"a": False, "b": None})]
    assert disagreements({"a": {"template": "qwen3"}, "b": {"template": "qwen3"}}) == []


def test_recipes_check_names_each_broken_rule_before_any_drift(tmp_path, monkeypatch):
    root = edited_copy(tmp_path, {"recipes/tiny-qwen3/chat.yaml": [(r"^enable_thinking: false.*\n", "")]})
    monkeypatch.chdir(root)
    result = CliRunner().invoke(main, ["recipes", "--check"])
    assert result.exit_code == 1
    assert "2 recipe rule(s) broken" in result.output
    assert "recipes/tiny-qwen3/chat.yaml: template qwen3 without enable_thinking: false" in result.output
    assert "recipes/tiny-qwen3: enable_thinking differs between recipes" in result.output and "chat.yaml: None" in result.output
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["recipes", "--check"])
    assert result.exit_code == 0 and "keep every folder rule and match the generator" in result.output


def test_the_dpo_adapter_is_loaded_after_the_sft_adapter_it_was_trained_on(tmp_path, generated):
    """LLaMA-Factory merges adapters in the order named: the DPO adapter only means something on top of SFT's."""
    root = edited_copy(
        tmp_path,
        {
            "recipes/tiny-qwen3/chat_dpo.yaml": [
                (r"^adapter_name_or_path: .*$", "adapter_name_or_path: saves/tiny-qwen3/lora-dpo/dpo,saves/tiny-qwen3/lora/sft")
            ],
            "recipes/tiny-qwen3/export_dpo.yaml": [
                (r"^adapter_name_or_path: .*$", "adapter_name_or_path: saves/tiny-qwen3/lora-dpo/dpo")
            ],
        },
        source=generated,
    )
    problems = invariant_problems(root)
    fix = (
        "adapter saves/tiny-qwen3/lora-dpo/dpo was trained on top of saves/tiny-qwen3/lora/sft; "
        "name them first: adapter_name_or_path: saves/tiny-qwen3/lora/sft,saves/tiny-qwen3/lora-dpo/dpo"
    )
    assert problems == [f"recipes/tiny-qwen3/chat_dpo.yaml: {fix}", f"recipes/tiny-qwen3/export_dpo.yaml: {fix}"], problems
