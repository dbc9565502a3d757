"""Every shipped recipe: matches the generator, parses with LLaMA-Factory's and DeepSpeed's own parsers."""

import json

import pytest
import yaml

from caretune import recipes
from tests.conftest import ROOT

YAML_FILES = sorted((ROOT / "recipes").glob("*/*.yaml"))
DEEPSPEED_FILES = sorted((ROOT / "recipes" / "deepspeed").glob("*.json"))


def test_committed_recipes_match_the_generator():
    assert recipes.drift(ROOT) == []
    assert {str(p.relative_to(ROOT)) for p in YAML_FILES + DEEPSPEED_FILES} == {
        path for path in recipes.generated_files() if not path.endswith("README.md")}


def test_drift_is_detected(tmp_path):
    recipes.write_recipes(tmp_path)
    assert recipes.drift(tmp_path) == []
    edited = tmp_path / "recipes" / "qwen3-8b" / "lora_sft.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("lora_rank: 8", "lora_rank: 16"), encoding="utf-8")
    assert recipes.drift(tmp_path) == ["recipes/qwen3-8b/lora_sft.yaml"]


def test_walkthrough_numbers_in_the_qwen3_8b_recipes():
    sft = yaml.safe_load((ROOT / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8"))
    assert sft["model_name_or_path"] == "Qwen/Qwen3-8B" and sft["dataset"] == "multi-med,huatuo2-sft"
    assert (sft["num_train_epochs"], sft["per_device_train_batch_size"], sft["cutoff_len"]) == (2.0, 24, 2048)
    assert sft["lora_target"] == "all" and sft["bf16"] is True and sft["template"] == "qwen3_nothink"
    assert sft["deepspeed"] == "recipes/deepspeed/ds_z2.json"
    assert not any(key in sft for key in ("neat_packing", "packing", "enable_liger_kernel", "flash_attn"))
    text = (ROOT / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8")
    assert "effective batch = 24 x 4 GPUs x 1 = 96" in text
    predict = yaml.safe_load((ROOT / "recipes/qwen3-8b/predict.yaml").read_text(encoding="utf-8"))
    assert (predict["per_device_eval_batch_size"], predict["cutoff_len"], predict["max_new_tokens"]) == (32, 2048, 1024)
    assert predict["do_sample"] is False and predict["eval_dataset"] == "multi-med-eval,huatuo2-eval"
    chat = yaml.safe_load((ROOT / "recipes/qwen3-8b/chat.yaml").read_text(encoding="utf-8"))
    assert "医生" in chat["default_system"] and chat["enable_thinking"] is False


def test_fast_default_differs_from_the_walkthrough_only_in_speed_keys():
    fast = yaml.safe_load((ROOT / "recipes/qwen3-8b/lora_sft.yaml").read_text(encoding="utf-8"))
    walkthrough = yaml.safe_load((ROOT / "recipes/qwen3-8b/lora_sft_walkthrough.yaml").read_text(encoding="utf-8"))
    changed = {key for key in fast.keys() | walkthrough.keys() if fast.get(key) != walkthrough.get(key)}
    assert changed == {"neat_packing", "enable_liger_kernel", "flash_attn", "per_device_train_batch_size", "output_dir"}
    assert (fast["neat_packing"], fast["enable_liger_kernel"], fast["flash_attn"]) == (True, True, "sdpa")
    assert fast["per_device_train_batch_size"] == 4  # measured on an H100 (benchmarks/README.md)
    assert fast["output_dir"] != walkthrough["output_dir"]  # the two runs never share a folder
    predict = yaml.safe_load((ROOT / "recipes/qwen3-8b/predict.yaml").read_text(encoding="utf-8"))
    assert predict["adapter_name_or_path"] == fast["output_dir"]
    assert recipes.sized_gpus(str(ROOT / "recipes/qwen3-8b/lora_sft.yaml")) == 4
    assert recipes.sized_gpus(str(ROOT / "recipes/qwen3-8b/lora_sft_walkthrough.yaml")) == 4
    assert recipes.sized_gpus(str(ROOT / "recipes/tiny-qwen3/predict.yaml")) == 1
    assert recipes.sized_gpus(str(ROOT / "pyproject.toml")) is None


@pytest.mark.lf
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses_with_llamafactory(path):
    import torch
    from llamafactory.hparams.parser import _parse_infer_args, _parse_train_args

    args = yaml.safe_load(path.read_text(encoding="utf-8"))
    if args.get("bf16") and not torch.cuda.is_available():
        args["bf16"] = False  # transformers refuses bf16 without a GPU; every other key is parsed as shipped
    parse = _parse_train_args if path.stem.startswith("lora_sft") or path.stem == "predict" else _parse_infer_args
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
        return {"train_batch_size": 24, "train_micro_batch_size_per_gpu": 24, "gradient_accumulation_steps": 1,
                "gradient_clipping": 1.0, "enabled": key == "enabled" and False}.get(key, 1_000_000)

    config = fill(json.loads(path.read_text(encoding="utf-8")))
    config["bf16"]["enabled"] = True
    parsed = DeepSpeedConfig(config)
    expected_stage = 2 if "z2" in path.name else 3
    assert parsed.zero_optimization_stage == expected_stage
    assert parsed.train_batch_size == 24
    if "offload" in path.name:
        assert parsed.zero_config.offload_optimizer is not None
