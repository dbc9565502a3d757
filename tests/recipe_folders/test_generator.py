"""Recipes are for editing: the rules every recipe keeps (checked on whatever is shipped), LLaMA-Factory's and
DeepSpeed's own parsers on every file, and the generator's numbers checked on what it writes."""

import json
from dataclasses import replace

import pytest
import yaml

from caretune.recipe_folders import generator as recipes
from caretune.recipe_folders.rules import invariant_problems
from tests.helpers import ROOT, edited_copy

YAML_FILES = sorted((ROOT / "recipes").glob("*/*.yaml"))
DEEPSPEED_FILES = sorted((ROOT / "recipes" / "deepspeed").glob("*.json"))


def test_recipes_keeps_your_edits_unless_told_to_overwrite(tmp_path):
    recipes.write_recipes(tmp_path)
    edited = tmp_path / "recipes" / "qwen3-8b" / "lora_sft.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("lora_rank: 8", "lora_rank: 16"), encoding="utf-8")
    (tmp_path / "recipes" / "qwen3-8b" / "chat.yaml").unlink()
    assert recipes.drift(tmp_path) == ["recipes/qwen3-8b/lora_sft.yaml", "recipes/qwen3-8b/chat.yaml"]
    assert recipes.write_recipes(tmp_path) == (["recipes/qwen3-8b/chat.yaml"], ["recipes/qwen3-8b/lora_sft.yaml"])
    assert "lora_rank: 16" in edited.read_text(encoding="utf-8")
    assert recipes.write_recipes(tmp_path, overwrite=True) == (["recipes/qwen3-8b/lora_sft.yaml"], [])
    assert recipes.drift(tmp_path) == []


def test_walkthrough_numbers_in_the_generated_qwen3_8b_recipes(generated):
    sft = yaml.safe_load((generated / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8"))
    assert sft["model_name_or_path"] == "Qwen/Qwen3-8B" and sft["dataset"] == "multi-med,huatuo2-sft"
    assert (sft["num_train_epochs"], sft["per_device_train_batch_size"], sft["cutoff_len"]) == (2.0, 24, 2048)
    assert sft["lora_target"] == "all" and sft["bf16"] is True and sft["template"] == "qwen3"
    assert sft["deepspeed"] == "recipes/deepspeed/ds_z2.json"
    assert not any(key in sft for key in ("neat_packing", "packing", "enable_liger_kernel", "flash_attn"))
    text = (generated / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8")
    assert "effective batch = 24 x 4 GPUs x 1 = 96" in text
    predict = yaml.safe_load((generated / "recipes/qwen3-8b/predict.yaml").read_text(encoding="utf-8"))
    assert (predict["per_device_eval_batch_size"], predict["cutoff_len"], predict["max_new_tokens"]) == (32, 2048, 1024)
    assert predict["do_sample"] is False and predict["eval_dataset"] == "multi-med-eval,huatuo2-eval"
    chat = yaml.safe_load((generated / "recipes/qwen3-8b/chat.yaml").read_text(encoding="utf-8"))
    assert "医生" in chat["default_system"] and chat["enable_thinking"] is False


def test_fast_default_differs_from_the_walkthrough_only_in_speed_keys(generated):
    fast = yaml.safe_load((generated / "recipes/qwen3-8b/lora_sft.yaml").read_text(encoding="utf-8"))
    walkthrough = yaml.safe_load((generated / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8"))
    changed = {key for key in fast.keys() | walkthrough.keys() if fast.get(key) != walkthrough.get(key)}
    assert changed == {"neat_packing", "enable_liger_kernel", "flash_attn", "per_device_train_batch_size", "output_dir"}
    assert (fast["neat_packing"], fast["enable_liger_kernel"], fast["flash_attn"]) == (True, True, "sdpa")
    assert fast["per_device_train_batch_size"] == 4  # measured on an H100 (benchmarks/README.md)
    assert fast["output_dir"] != walkthrough["output_dir"]  # the two runs never share a folder
    predict = yaml.safe_load((generated / "recipes/qwen3-8b/predict.yaml").read_text(encoding="utf-8"))
    assert predict["adapter_name_or_path"] == fast["output_dir"]
    assert recipes.sized_layout(str(generated / "recipes/qwen3-8b/lora_sft.yaml")) == (4, 1)
    assert recipes.sized_layout(str(generated / "recipes/qwen3-8b/lora_sft_walkthrough.yaml")) == (4, 1)
    assert recipes.sized_layout(str(generated / "recipes/tiny-qwen3/predict.yaml")) == (1, 1)
    assert recipes.sized_layout(str(ROOT / "pyproject.toml")) is None


@pytest.mark.lf
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses_with_llamafactory(path):
    import torch
    from llamafactory.hparams.parser import _parse_infer_args, _parse_train_args

    args = yaml.safe_load(path.read_text(encoding="utf-8"))
    if args.get("bf16") and not torch.cuda.is_available():
        args["bf16"] = False  # transformers refuses bf16 without a GPU; every other key is parsed as shipped
    parse = _parse_train_args if path.stem.startswith(("lora_sft", "predict", "dpo")) else _parse_infer_args
    parsed = parse(args)  # unknown keys or bad values raise
    assert parsed


@pytest.mark.lf
def test_llamafactory_parser_rejects_an_unknown_key():
    from llamafactory.hparams.parser import _parse_train_args

    args = yaml.safe_load((ROOT / "recipes/tiny-qwen3/lora_sft.yaml").read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="lora_rnak"):
        _parse_train_args({**args, "lora_rnak": 8})


@pytest.mark.lf
@pytest.mark.parametrize("path", DEEPSPEED_FILES, ids=lambda p: p.name)
def test_deepspeed_config_parses_with_deepspeed(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    def fill(value, key=""):
        """What the HF Trainer substitutes for "auto" (one process, batch 24, bf16)."""
        if isinstance(value, dict):
            return {k: fill(v, k) for k, v in value.items()}
        if value != "auto":
            return value
        return {
            "train_batch_size": 24,
            "train_micro_batch_size_per_gpu": 24,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "enabled": key == "enabled" and False,
        }.get(key, 1_000_000)

    config = fill(json.loads(path.read_text(encoding="utf-8")))
    config["bf16"]["enabled"] = True
    parsed = DeepSpeedConfig(config)
    expected_stage = 2 if "z2" in path.name else 3
    assert parsed.zero_optimization_stage == expected_stage
    assert parsed.train_batch_size == 24
    if "offload" in path.name:
        assert parsed.zero_config.offload_optimizer is not None


def test_a_zero3_folder_gives_dpo_a_reference_model_of_its_own():
    """ZeRO-3 cannot merge the SFT adapter, so create_new_adapter would leave the base as the reference: a ZeRO-3
    folder's DPO resumes the SFT adapter and loads the SFT model as ref_model (preflight accepts it)."""
    import yaml

    from caretune.training.recipe_checks import check_reference_model

    recipe = replace(recipes.QWEN3_8B, deepspeed="recipes/deepspeed/ds_z3.json")
    args = yaml.safe_load(recipes.folder_files(recipe)["dpo.yaml"])
    assert "ds_z3" in args["deepspeed"] and "create_new_adapter" not in args
    assert args["ref_model"] == "Qwen/Qwen3-8B" and args["ref_model_adapters"] == args["adapter_name_or_path"]
    check_reference_model("dpo.yaml", args, {"zero_optimization": {"stage": 3}})


def test_recipes_new_writes_the_shipped_qwen3_8b_recipes_for_4_h800(tmp_path):
    written = recipes.write_new_folder(recipes.sized_recipe("qwen3-8b", "Qwen/Qwen3-8B", 4, "h800"), tmp_path / "qwen3-8b")
    assert len(written) == len(recipes.TASKS) + 1  # and the README
    generated = recipes.generated_files()
    for task in recipes.TASKS:
        assert (tmp_path / "qwen3-8b" / f"{task}.yaml").read_text(encoding="utf-8") == generated[f"recipes/qwen3-8b/{task}.yaml"], (
            task
        )


@pytest.mark.parametrize(
    "model, gpus, gpu, micro, accumulation, deepspeed",
    [
        ("Qwen/Qwen3-8B", 4, "h800", 4, 1, "recipes/deepspeed/ds_z2.json"),
        ("Qwen/Qwen3-8B", 1, "h800", 4, 4, None),  # one GPU: no DeepSpeed, accumulation keeps 16 packs
        ("Qwen/Qwen3-8B", 8, "h100", 2, 1, "recipes/deepspeed/ds_z2.json"),  # 8 GPUs: fewer packs each keeps 16
        ("Qwen/Qwen3-8B", 3, "h800", 4, 2, "recipes/deepspeed/ds_z2.json"),  # 3 does not divide 16: 24 packs
        ("Qwen/Qwen3-32B", 4, "a100-40g", 4, 1, "recipes/deepspeed/ds_z3.json"),  # 64 GB of weights: sharded
        ("Qwen/Qwen3-8B", 16, "h100", 1, 1, "recipes/deepspeed/ds_z2.json"),  # 16 GPUs: one pack each is 16
        ("Qwen/Qwen3-8B", 32, "h100", 1, 1, "recipes/deepspeed/ds_z2.json"),  # past 16: one pack per GPU, not 4
    ],
)
def test_recipes_new_sizes_by_the_plans_memory_model(tmp_path, model, gpus, gpu, micro, accumulation, deepspeed):
    from caretune.planning import estimate
    from caretune.planning.plan import resolve_arch

    recipe = recipes.sized_recipe("new-model", model, gpus, gpu)
    assert (recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps, recipe.deepspeed) == (
        micro,
        accumulation,
        deepspeed,
    )
    zero = 3 if deepspeed and "z3" in deepspeed else 2
    memory = estimate.memory_breakdown(
        resolve_arch(model)[0],
        micro_batch_tokens=micro * recipe.cutoff_len,
        gpus=gpus,
        lora_rank=8,
        zero_stage=zero,
        offload=False,
        fused_cross_entropy=True,
    )
    assert memory["total"] <= estimate.GPUS[gpu].memory_gib * estimate.GIB * estimate.MEMORY_HEADROOM
    root = edited_copy(tmp_path, {})
    recipes.write_new_folder(recipe, root / "recipes" / "new-model")
    assert invariant_problems(root) == []


def test_recipes_new_refuses_what_it_cannot_do_well(tmp_path):
    from click.testing import CliRunner

    from caretune.cli import main

    out = tmp_path / "qwen3-14b"
    done = CliRunner().invoke(main, ["recipes", "new", "--model", "Qwen/Qwen3-14B", "--gpus", "2", "--out", str(out)])
    assert done.exit_code == 0 and "16 packs per step" in done.output and (out / "chat.yaml").exists()
    again = CliRunner().invoke(main, ["recipes", "new", "--model", "Qwen/Qwen3-14B", "--gpus", "2", "--out", str(out)])
    assert again.exit_code == 1 and "already exist; pass --overwrite" in again.output
    other = CliRunner().invoke(
        main, ["recipes", "new", "--model", "meta-llama/Llama-3.1-8B", "--gpus", "2", "--out", str(tmp_path / "llama")]
    )
    assert other.exit_code == 1 and "pass --template" in other.output


def test_recipes_new_suggests_a_plan_for_its_gpus_and_refuses_absurd_counts(tmp_path):
    from click.testing import CliRunner

    from caretune.cli import main

    out = tmp_path / "qwen3-8b-a100"
    done = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--gpus", "2", "--gpu", "a100-40g", "--out", str(out)]
    )
    assert done.exit_code == 0 and f"caretune plan {out / 'lora_sft.yaml'} --gpus 2 --gpu a100-40g" in done.output
    absurd = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--gpus", "1000", "--out", str(tmp_path / "x")]
    )
    assert absurd.exit_code == 2 and "--gpus" in absurd.output and not (tmp_path / "x").exists()


def test_recipes_new_sizes_several_nodes_by_their_world_size(tmp_path):
    """2 nodes x 8 GPUs are sized as 16 GPUs (one pack each reaches the default's 16 packs a step), and the
    suggested commands carry the world size and the node count."""
    from click.testing import CliRunner

    from caretune.cli import main

    two_nodes = recipes.sized_recipe("qwen3-8b-16", "Qwen/Qwen3-8B", 8, "h100", nodes=2)
    sixteen = recipes.sized_recipe("qwen3-8b-16", "Qwen/Qwen3-8B", 16, "h100")
    assert (two_nodes.per_device_train_batch_size, two_nodes.gradient_accumulation_steps) == (1, 1)
    assert recipes.folder_files(two_nodes)["lora_sft.yaml"] == recipes.folder_files(sixteen)["lora_sft.yaml"]
    assert "effective batch = 1 x 16 GPUs x 1 = 16" in recipes.folder_files(two_nodes)["lora_sft.yaml"]
    assert "2 nodes x 8 GPUs" in recipes.folder_files(two_nodes)["README.md"]
    root = edited_copy(tmp_path, {})
    recipes.write_new_folder(two_nodes, root / "recipes" / "qwen3-8b-16")
    assert invariant_problems(root) == []

    out = tmp_path / "two-nodes"
    done = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--nodes", "2", "--gpus", "8", "--gpu", "h100", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert f"caretune plan {out / 'lora_sft.yaml'} --gpus 8 --nodes 2 --gpu h100" in done.output  # GPUs per node
    assert "NNODES=2" in done.output and "sized for 2 nodes x 8 x h100" in done.output


def test_recipes_new_refuses_a_world_past_the_ceiling(tmp_path):
    from click.testing import CliRunner

    from caretune.cli import main

    out = tmp_path / "too-many"
    done = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--nodes", "16", "--gpus", "8", "--out", str(out)]
    )
    assert done.exit_code != 0 and not out.exists()
    assert f"--nodes 16 x --gpus 8 = 128 GPUs, more than {recipes.MAX_GPUS}" in done.output
    with pytest.raises(recipes.RecipeError, match="128 GPUs"):
        recipes.sized_recipe("x", "Qwen/Qwen3-8B", 8, "h100", nodes=16)


@pytest.mark.lf  # the workspace fits its rows with LLaMA-Factory's template
@pytest.mark.parametrize(
    "activations, compiled, keys",
    [
        ("kept", False, {"disable_gradient_checkpointing": True, "gradient_checkpointing": False}),
        ("offloaded", False, {"use_unsloth_gc": True, "gradient_checkpointing": True}),
        ("checkpointed", True, {"torch_compile": True, "gradient_checkpointing": True}),
    ],
)
def test_a_speed_variant_is_one_field_of_the_generator_and_plan_reads_it_back(tmp_path, monkeypatch, activations, compiled, keys):
    """The GPU check's variants map onto the default recipe through ModelRecipe fields; `caretune plan` reads the
    written keys back as the same variant."""

    from caretune.planning.recipe_settings import read_recipe
    from tests.helpers import converted_workspace

    recipe = replace(recipes.QWEN3_8B, activations=activations, torch_compile=compiled)
    text = recipes.folder_files(recipe)["lora_sft.yaml"]
    args = yaml.safe_load(text)
    assert {key: args.get(key) for key in keys} == keys
    workspace = converted_workspace(tmp_path)
    monkeypatch.chdir(workspace)
    (workspace / "variant.yaml").write_text(text, encoding="utf-8")
    settings = read_recipe("variant.yaml")
    assert settings.activations == activations and settings.torch_compile == compiled


def test_mix_shares_sum_to_one_as_numpy_checks_it():
    """Written with `:.4g`, 0.8491,0.05094,0.1 summed to 1.00004 and LLaMA-Factory's interleaving refused it."""
    import numpy as np

    from caretune.prep.mixing import mix_shares

    for rows in ([900_000, 50_000], [500_000, 142_248], [3, 1]):
        written = [float(f"{p:.6f}".rstrip("0")) for p in mix_shares(rows, 0.1)]
        assert abs(sum(written) - 1) < 1e-8 and written[-1] == 0.1
        np.random.default_rng(0).choice(len(written), p=written)  # raises when they do not sum to 1
