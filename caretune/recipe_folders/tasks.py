"""Each task's recipe as LLaMA-Factory example-style sections: (group, [(key, value, comment)])."""

from __future__ import annotations

from pathlib import Path

from caretune.constants import (
    CHATMED_DATASET,
    CHATMED_EVAL_DATASET,
    GENERAL_DATASET,
    HUATUO_DATASET,
    HUATUO_EVAL_DATASET,
    MEDICAL_SYSTEM_PROMPT,
    ONPOLICY_PREFS_DATASET,
)
from caretune.recipe_folders.models import DPO_EPOCHS, PREF_BETA, ModelRecipe
from caretune.thinking import REASONING_TEMPLATE

DEEPSPEED_COMMENTS = {
    "ds_z2.json": "ZeRO-2; ds_z3.json / ds_z3_offload.json for less memory",
    "ds_z3.json": "ZeRO-3: weights sharded across GPUs (ZeRO-2 does not fit)",
    "ds_z3_offload.json": "ZeRO-3 with CPU offload: slow, but nothing else fits",
}
TRAIN_DATASETS = f"{CHATMED_DATASET},{HUATUO_DATASET}"
EVAL_DATASETS = f"{CHATMED_EVAL_DATASET},{HUATUO_EVAL_DATASET}"
Section = tuple[str, list[tuple[str, object, str]]]  # (title, [(key, value, comment)])


def _model_section(recipe: ModelRecipe, adapter: bool, dpo: bool = False) -> Section:
    keys = [("model_name_or_path", recipe.model, recipe.note)]
    if adapter and dpo:
        keys.append(
            (
                "adapter_name_or_path",
                f"{recipe.output_dir('lora_sft')},{recipe.output_dir('dpo')}",
                "SFT's adapter, then DPO's on top of it (dpo.yaml), in that order",
            )
        )
    elif adapter:
        keys.append(("adapter_name_or_path", recipe.output_dir("lora_sft"), "the LoRA adapter lora_sft.yaml trains"))
    keys.append(("trust_remote_code", True, ""))
    return ("model", keys)


def _template_keys(recipe: ModelRecipe) -> list[tuple[str, object, str]]:
    if recipe.template == REASONING_TEMPLATE:
        return [
            (
                "template",
                recipe.template,
                "Qwen3 reasons, so LLaMA-Factory's `_nothink` warning does not apply; same in every recipe",
            ),
            ("enable_thinking", False, "non-thinking: every prompt ends in the empty think block; no <think> in answers"),
        ]
    return [("template", recipe.template, "the same in every recipe of this folder"), ("enable_thinking", False, "")]


def _history_keys(recipe: ModelRecipe) -> list[tuple[str, object, str]]:
    """Training only: a multi-turn row learns its last answer, with earlier ones rendered as served prompts render them."""
    if recipe.template != REASONING_TEMPLATE:
        return []
    return [("mask_history", True, "multi-turn rows: loss on the last answer; history as chat and the API render it")]


def _loading_keys(recipe: ModelRecipe) -> list[tuple[str, object, str]]:
    """How a training recipe loads its data: fresh preprocessing, and workers on a GPU machine."""
    return [
        ("overwrite_cache", True, ""),
        ("preprocessing_num_workers", 16 if recipe.gpus > 1 else None, ""),
        ("dataloader_num_workers", 4 if recipe.gpus > 1 else 0, ""),
    ]


def effective_batch(recipe: ModelRecipe) -> str:
    """The derived-numbers comment of `gradient_accumulation_steps`."""
    where = "GPUs" if recipe.world_size > 1 else "process"
    total = recipe.packs_per_step
    text = (
        f"effective batch = {recipe.per_device_train_batch_size} x {recipe.world_size} {where} x "
        f"{recipe.gradient_accumulation_steps} = {total}"
    )
    if recipe.neat_packing:
        text += f" packs of up to {recipe.cutoff_len} tokens ({total * recipe.cutoff_len:,} tokens)"
    return text


def _speed_keys(recipe: ModelRecipe) -> list[tuple[str, object, str]]:
    """Attention, fused kernels and activation memory of a training recipe."""
    speed = []
    if recipe.flash_attn:
        speed.append(
            (
                "flash_attn",
                recipe.flash_attn,
                "FlashAttention-2 where installed, else LLaMA-Factory uses sdpa"
                if recipe.flash_attn == "fa2"
                else "fa2 (pip install flash-attn) takes per_device_train_batch_size: 1 with neat packing",
            )
        )
    if recipe.liger:
        speed.append(
            ("enable_liger_kernel", True, "fused linear cross-entropy: no full logits in memory (pip install liger-kernel)")
        )
    if recipe.activations == "kept":
        speed.append(("disable_gradient_checkpointing", True, "every layer's activations kept: faster, more memory"))
    if recipe.activations == "offloaded":
        speed.append(("use_unsloth_gc", True, "checkpointed activations wait in host memory"))
    return speed


def _training_datasets(recipe: ModelRecipe) -> list[tuple[str, object, str]]:
    """The medical sets, and with a general share the mix that draws general rows beside them."""
    datasets = [("dataset", TRAIN_DATASETS, "")]
    if recipe.general_share:
        datasets = [
            ("dataset", f"{TRAIN_DATASETS},{GENERAL_DATASET}", "general Chinese instructions mixed in against forgetting"),
            ("mix_strategy", "interleave_over", "rows drawn by these shares until every set is used once; a small set repeats"),
            (
                "interleave_probs",
                ",".join(f"{p:.6f}".rstrip("0") for p in recipe.mix),
                f"{recipe.general_share:.0%} of rows general; the medical sets in proportion to their rows",
            ),
        ]
    return datasets


def lora_sft(recipe: ModelRecipe) -> list[Section]:
    """The training recipe's sections."""
    method = [
        ("stage", "sft", ""),
        ("do_train", True, ""),
        ("finetuning_type", "lora", ""),
        ("lora_target", "all", "every linear layer"),
        ("lora_rank", 8, ""),
        ("lora_alpha", 16, ""),
        ("lora_dropout", 0.05, ""),
    ]
    if recipe.deepspeed:
        method.append(("deepspeed", recipe.deepspeed, DEEPSPEED_COMMENTS[Path(recipe.deepspeed).name]))
    speed = _speed_keys(recipe)
    packing = (
        [("neat_packing", True, "rows packed without padding; attention stays within each row")] if recipe.neat_packing else []
    )
    compiled = [("torch_compile", True, "")] if recipe.torch_compile else []
    datasets = _training_datasets(recipe)
    schedule = (
        [("num_train_epochs", recipe.num_train_epochs, "")]
        if recipe.num_train_epochs is not None
        else [("max_steps", recipe.max_steps, "a few steps: enough to see the loss move")]
    )
    model = _model_section(recipe, adapter=False)
    return [
        (model[0], model[1] + speed),
        ("method", method),
        (
            "dataset",
            [
                *datasets,
                ("dataset_dir", ".", "dataset_info.json at the repository root"),
                *_template_keys(recipe),
                *_history_keys(recipe),
                ("cutoff_len", recipe.cutoff_len, ""),
                *packing,
                *_loading_keys(recipe),
            ],
        ),
        (
            "output",
            [
                ("output_dir", recipe.output_dir(recipe.train_task), ""),
                ("logging_steps", recipe.logging_steps, ""),
                ("save_steps", recipe.save_steps, ""),
                ("plot_loss", True, "training_loss.png"),
                ("overwrite_output_dir", False, "caretune train refuses a finished run; resumes an unfinished one"),
                ("save_only_model", False, "keep optimizer state so an interrupted run resumes exactly"),
                ("report_to", "none", "tensorboard or wandb: install it, then name it here"),
            ],
        ),
        (
            "train",
            [
                (
                    "per_device_train_batch_size",
                    recipe.per_device_train_batch_size,
                    "packs per device: 4 gave 1.74x the tokens/s of 1 on an H100 (benchmarks/README.md)"
                    if recipe.neat_packing
                    else "",
                ),
                ("gradient_accumulation_steps", recipe.gradient_accumulation_steps, effective_batch(recipe)),
                ("learning_rate", recipe.learning_rate, ""),
                *schedule,
                ("lr_scheduler_type", "cosine", ""),
                ("warmup_ratio", 0.1, ""),
                ("bf16", recipe.bf16, ""),
                ("gradient_checkpointing", recipe.activations != "kept", ""),
                *compiled,
                ("ddp_timeout", 180000000, ""),
                ("seed", 42, ""),
            ],
        ),
    ]


def _reference_keys(recipe: ModelRecipe, zero3: bool) -> list[tuple[str, object, str]]:
    """DPO's reference model: the SFT model, merged (a new adapter on top) or, under ZeRO-3, loaded beside it."""
    return (
        [  # ZeRO-3 cannot merge the SFT adapter: DPO trains it further, against the SFT model loaded as ref_model
            ("ref_model", recipe.model, "the reference: the SFT model (ZeRO-3 cannot merge the adapter)"),
            ("ref_model_adapters", recipe.output_dir("lora_sft"), ""),
        ]
        if zero3
        else [
            (
                "create_new_adapter",
                True,
                "a new adapter over the merged SFT one: the reference (adapters off) is the SFT model, not the base",
            )
        ]
    )


def dpo(recipe: ModelRecipe) -> list[Section]:
    """The preference stage: DPO from the SFT adapter, on judged pairs of the SFT model's own answers."""
    lora = [key for key in lora_sft(recipe)[1][1] if key[0].startswith("lora_")]
    zero3 = bool(recipe.deepspeed) and "z3" in Path(recipe.deepspeed).name
    reference = _reference_keys(recipe, zero3)
    method = [
        ("stage", "dpo", ""),
        ("do_train", True, ""),
        ("finetuning_type", "lora", ""),
        *reference,
        *lora,
        ("pref_beta", PREF_BETA, "LLaMA-Factory's qwen3_lora_dpo example (alignment-handbook's zephyr QLoRA DPO: 0.01)"),
        ("pref_loss", "sigmoid", "DPO; orpo and simpo need no reference model"),
    ]
    if recipe.deepspeed:
        method.append(("deepspeed", recipe.deepspeed, "" if zero3 else "ZeRO-2: the SFT adapter merges; ZeRO-3 cannot"))
    schedule = (
        [("num_train_epochs", DPO_EPOCHS, "alignment-handbook's DPO recipes: one pass over the pairs")]
        if recipe.dpo_max_steps is None
        else [("max_steps", recipe.dpo_max_steps, "a few steps: enough to see the reward margin move")]
    )
    where = "GPUs" if recipe.world_size > 1 else "process"
    batch = (
        f"effective batch = {recipe.dpo_per_device} x {recipe.world_size} {where} x {recipe.dpo_accumulation} = "
        f"{recipe.pairs_per_step} pairs"
    )
    return [
        (
            "model",
            [
                ("model_name_or_path", recipe.model, recipe.note),
                ("adapter_name_or_path", recipe.output_dir("lora_sft"), "DPO starts from the SFT model lora_sft.yaml trains"),
                ("trust_remote_code", True, ""),
            ],
        ),
        ("method", method),
        (
            "dataset",
            [
                ("dataset", ONPOLICY_PREFS_DATASET, "judged pairs of the SFT model's own answers (caretune prefs build)"),
                ("dataset_dir", ".", ""),
                *_template_keys(recipe),
                ("cutoff_len", recipe.cutoff_len, "no packing: LLaMA-Factory packs SFT rows only"),
                *_loading_keys(recipe),
            ],
        ),
        (
            "output",
            [
                ("output_dir", recipe.output_dir("dpo"), ""),
                ("logging_steps", 1 if recipe.dpo_max_steps else recipe.logging_steps, "loss, rewards/margins, accuracy"),
                ("save_steps", recipe.save_steps, ""),
                ("plot_loss", True, ""),
                ("overwrite_output_dir", False, ""),
                ("save_only_model", False, ""),
                ("report_to", "none", ""),
            ],
        ),
        (
            "train",
            [
                ("per_device_train_batch_size", recipe.dpo_per_device, "pairs per device"),
                ("gradient_accumulation_steps", recipe.dpo_accumulation, batch),
                (
                    "learning_rate",
                    recipe.dpo_learning_rate,
                    "LLaMA-Factory's qwen3_lora_dpo example" if recipe.dpo_max_steps is None else "",
                ),
                *schedule,
                ("lr_scheduler_type", "cosine", ""),
                ("warmup_ratio", 0.1, ""),
                ("bf16", recipe.bf16, ""),
                ("gradient_checkpointing", True, ""),
                ("ddp_timeout", 180000000, ""),
                ("seed", 42, ""),
            ],
        ),
    ]


def predict(recipe: ModelRecipe, dpo: bool = False) -> list[Section]:
    """The held-out generation recipe's sections."""
    return [
        _model_section(recipe, adapter=True, dpo=dpo),
        ("method", [("stage", "sft", ""), ("do_predict", True, ""), ("finetuning_type", "lora", "")]),
        (
            "dataset",
            [
                ("eval_dataset", EVAL_DATASETS, "held-out splits, never trained on"),
                ("dataset_dir", ".", ""),
                *_template_keys(recipe),
                ("cutoff_len", recipe.cutoff_len, ""),
                ("overwrite_cache", True, ""),
            ],
        ),
        (
            "output",
            [
                ("output_dir", recipe.output_dir("predict_dpo" if dpo else "predict"), ""),
                ("overwrite_output_dir", True, ""),
                ("report_to", "none", ""),
            ],
        ),
        (
            "eval",
            [
                ("per_device_eval_batch_size", recipe.per_device_eval_batch_size, ""),
                ("predict_with_generate", True, "BLEU-4 and ROUGE on generated answers"),
                ("max_new_tokens", recipe.max_new_tokens, ""),
                ("do_sample", False, "greedy: two runs agree"),
                ("bf16", recipe.bf16, ""),
            ],
        ),
    ]


def chat(recipe: ModelRecipe, dpo: bool = False) -> list[Section]:
    """The chat recipe's sections."""
    return [
        _model_section(recipe, adapter=True, dpo=dpo),
        ("method", [("finetuning_type", "lora", ""), ("infer_backend", "huggingface", "vllm on GPUs where installed")]),
        (
            "chat",
            [
                *_template_keys(recipe),
                ("default_system", MEDICAL_SYSTEM_PROMPT, "reminds users to confirm with a doctor"),
                ("max_new_tokens", recipe.max_new_tokens, ""),
                ("do_sample", False, ""),
            ],
        ),
    ]


def export(recipe: ModelRecipe, dpo: bool = False) -> list[Section]:
    """The export (merge) recipe's sections."""
    return [
        _model_section(recipe, adapter=True, dpo=dpo),
        ("method", [("finetuning_type", "lora", ""), *_template_keys(recipe)]),
        (
            "export",
            [
                (
                    "export_dir",
                    f"saves/{recipe.folder}/merged-dpo" if dpo else f"saves/{recipe.folder}/merged",
                    "base + SFT and DPO adapters merged" if dpo else "base + adapter merged",
                ),
                ("export_size", 5, "GB per shard"),
                ("export_device", "cpu", ""),
                ("export_legacy_format", False, ""),
            ],
        ),
    ]


TASK_BUILDERS = {
    "lora_sft": lora_sft,
    "predict": predict,
    "chat": chat,
    "export": export,
    "dpo": dpo,
    "predict_dpo": lambda recipe: predict(recipe, dpo=True),
    "chat_dpo": lambda recipe: chat(recipe, dpo=True),
    "export_dpo": lambda recipe: export(recipe, dpo=True),
}
