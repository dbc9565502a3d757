"""The shipped Qwen3-8B recipes run as shipped, short of what a CPU cannot do.

Each recipe is copied with only the GPU-only keys changed (model -> the tiny Qwen3, bf16 off, Liger off,
FlashAttention-2 -> sdpa, a few training steps, and one row or pack per device, since without Liger the full
logits do not fit a CI runner twice), and the list of changed keys is asserted: a new GPU-only key cannot
slip in unnoticed. Everything else (neat packing, DeepSpeed ZeRO-2, gradient checkpointing, the two-dataset
mix, cutoff 2048, 16 preprocessing workers, evaluation batch, generation lengths) runs as shipped,
through `caretune train` (2 processes where the recipe uses DeepSpeed), `eval`, `chat` and `export`; DPO trains
from the SFT adapter under ZeRO-2 in 2 processes, on the shipped preference sample standing in for on-policy pairs.
"""

import json
import math

import pytest
import yaml

from tests.helpers import ROOT, converted_workspace, run_caretune

pytestmark = pytest.mark.lf

FOLDER = "recipes/qwen3-8b"
TRAIN_STEPS = 2
EXPECTED_CHANGES = {
    "lora_sft": {"model_name_or_path", "bf16", "enable_liger_kernel", "max_steps", "per_device_train_batch_size"},
    "lora_sft_walkthrough": {"model_name_or_path", "bf16", "max_steps", "per_device_train_batch_size"},
    "predict": {"model_name_or_path", "bf16"},
    "chat": {"model_name_or_path"},
    "export": {"model_name_or_path"},
    "dpo": {"model_name_or_path", "bf16", "max_steps", "per_device_train_batch_size"},
    "predict_dpo": {"model_name_or_path", "bf16"},
    "chat_dpo": {"model_name_or_path"},
    "export_dpo": {"model_name_or_path"},
}


def cpu_version(args: dict, model_dir: str) -> dict:
    """The recipe with only what a CPU cannot run changed."""
    derived = {**args, "model_name_or_path": model_dir}
    if derived.get("bf16"):
        derived["bf16"] = False
    if derived.get("enable_liger_kernel"):
        derived["enable_liger_kernel"] = False  # Triton kernels need a GPU
    if derived.get("flash_attn") == "fa2":
        derived["flash_attn"] = "sdpa"
    if derived.get("do_train"):
        derived["max_steps"] = TRAIN_STEPS
        # without Liger the full logits (batch x 2048 x 151,936 floats, ~5 GB at 4 packs) are held per process:
        # two such processes overrun a CI runner's memory
        derived["per_device_train_batch_size"] = 1
    return derived


def prefs_into(workspace) -> None:
    """The shipped preference sample converted, and registered again as the on-policy set dpo.yaml trains on."""
    import shutil

    from caretune.basics.registry import register
    from converters import prefs
    from tests.helpers import SAMPLE, convert_into

    convert_into(workspace, prefs, SAMPLE / "prefs_med_sample.jsonl", eval_size=2)
    shutil.copy(workspace / "data/prefs-med.json", workspace / "data/prefs-onpolicy.json")
    register(
        workspace / "dataset_info.json", {"prefs-onpolicy": {"file_name": "data/prefs-onpolicy.json", **prefs.registry_entry()}}
    )


def run(workspace, *args, timeout=900):
    done = run_caretune(workspace, *args, timeout=timeout)
    assert done.returncode == 0, f"caretune {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_every_shipped_qwen3_8b_recipe_runs_on_cpu_with_only_gpu_keys_changed(tmp_path):
    from caretune.training.tiny_model import build_tiny_model

    workspace = converted_workspace(tmp_path / "project")
    model_dir = str(build_tiny_model(tmp_path / "tiny-qwen3"))
    shipped = sorted(p.stem for p in (ROOT / FOLDER).glob("*.yaml"))
    assert shipped == sorted(EXPECTED_CHANGES)
    for task in shipped:
        path = workspace / FOLDER / f"{task}.yaml"
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
        derived = cpu_version(args, model_dir)
        changed = {key for key in args.keys() | derived.keys() if args.get(key) != derived.get(key)}
        assert changed == EXPECTED_CHANGES[task], task
        path.write_text(yaml.safe_dump(derived, allow_unicode=True, sort_keys=False), encoding="utf-8")

    for task in ("lora_sft", "lora_sft_walkthrough"):
        args = yaml.safe_load((workspace / FOLDER / f"{task}.yaml").read_text(encoding="utf-8"))
        gpus = ["--gpus", "2"] if args.get("deepspeed") else []
        output = run(workspace, "train", f"{FOLDER}/{task}.yaml", *gpus)
        if gpus:
            assert "FORCE_TORCHRUN=1 NPROC_PER_NODE=2" in output
        run_dir = workspace / args["output_dir"]
        state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
        assert state["global_step"] == TRAIN_STEPS, task
        losses = [e["loss"] for e in state["log_history"] if "loss" in e] or [state["log_history"][-1]["train_loss"]]
        assert all(math.isfinite(x) for x in losses), task
        assert (run_dir / "adapter_model.safetensors").exists(), task

    prefs_into(workspace)
    run(workspace, "train", f"{FOLDER}/dpo.yaml", "--gpus", "2")
    dpo = workspace / "saves/qwen3-8b/lora-dpo/dpo"
    state = json.loads((dpo / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == TRAIN_STEPS and math.isfinite(state["log_history"][-1]["train_loss"])
    assert (dpo / "adapter_model.safetensors").exists()  # (the first step's ln 2: tests/training/test_preference_stage.py)

    run(workspace, "eval", f"{FOLDER}/predict.yaml")
    predict_dir = workspace / "saves/qwen3-8b/lora/predict"
    assert "predict_bleu-4" in json.loads((predict_dir / "predict_results.json").read_text(encoding="utf-8"))

    answer = run(workspace, "chat", f"{FOLDER}/chat.yaml", "--query", "头痛三天了怎么办？")
    assert "<think>" not in answer

    run(workspace, "export", f"{FOLDER}/export.yaml")
    merged = workspace / "saves/qwen3-8b/merged"
    assert (merged / "config.json").exists() and any(merged.glob("*.safetensors"))
