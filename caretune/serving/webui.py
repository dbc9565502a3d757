"""LLaMA-Factory's WebUI opened on a recipe: the training form holds the recipe's values when the page loads.

It uses the WebUI's own mechanisms: its user config (model name and path), its saved-arguments file (every
form field, as its "Load arguments" button reads it) and the form's "Extra arguments" box for recipe keys
that have no field. A key the WebUI always adds but the recipe does not set is cleared there, so that its
"Preview command" equals the recipe key by key; the two exceptions are `deepspeed` (the WebUI points at its
own copy of the same ZeRO stage) and `packing` (which `neat_packing` implies, and which is false otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

from caretune.recipe import names_in
from caretune.serving.defaults import WEBUI_STATE_DIR
from caretune.training.recipe_checks import zero_settings

# Form fields the WebUI turns into command keys: recipe key -> (field id, value in the form).
_FIELDS = {
    "model_name_or_path": "top.model_path",
    "template": "top.template",
    "finetuning_type": "top.finetuning_type",
    "dataset_dir": "train.dataset_dir",
    "cutoff_len": "train.cutoff_len",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "lr_scheduler_type": "train.lr_scheduler_type",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps",
    "neat_packing": "train.neat_packing",
    "enable_thinking": "train.enable_thinking",
    "mask_history": "train.mask_history",
    "report_to": "train.report_to",
    "output_dir": "train.output_dir",
    "lora_rank": "train.lora_rank",
    "lora_alpha": "train.lora_alpha",
    "lora_dropout": "train.lora_dropout",
    "lora_target": "train.lora_target",
}
_TEXT_FIELDS = {"learning_rate": "train.learning_rate", "num_train_epochs": "train.num_train_epochs"}
# Keys the WebUI's command always carries; where the recipe does not set them, "Extra arguments" clears them.
_WEBUI_ADDS = (
    "max_samples",
    "max_grad_norm",
    "warmup_steps",
    "include_num_input_tokens_seen",
    "num_train_epochs",
    "flash_attn",
    "preprocessing_num_workers",
    "plot_loss",
    "trust_remote_code",
    "ddp_timeout",
)
# Keys the form derives from other fields, so they never go to "Extra arguments".
_DERIVED = {"stage", "do_train", "dataset", "bf16", "fp16", "deepspeed", "enable_liger_kernel", "flash_attn"}
NO_SAMPLE_CAP = 10**9  # shown in the form's "Max samples"; the command leaves max_samples out (every row)
TRAINING_STAGES = {
    "sft": "Supervised Fine-Tuning",
    "pt": "Pre-Training",
    "rm": "Reward Modeling",
    "dpo": "DPO",
    "kto": "KTO",
    "ppo": "PPO",
}


def model_label(recipe: Path) -> str:
    """The WebUI's model name for a recipe's folder (e.g. caretune-qwen3-8b); its path and template come along."""
    return f"caretune-{Path(recipe).resolve().parent.name}"


def form_values(args: dict, recipe: Path, deepspeed: dict | None) -> dict:
    """The WebUI's saved-arguments dict (form field id -> value) that reproduces a training recipe."""
    values = {
        "top.model_name": model_label(recipe),
        "train.training_stage": TRAINING_STAGES[args.get("stage", "sft")],
        "train.dataset": names_in(args.get("dataset")),
        "train.compute_type": "bf16" if args.get("bf16") else "fp16" if args.get("fp16") else "fp32",
        "top.booster": "liger_kernel"
        if args.get("enable_liger_kernel")
        else "flashattn2"
        if args.get("flash_attn") == "fa2"
        else "auto",
        "train.val_size": 0,
        "train.warmup_steps": 0,
        "train.max_grad_norm": "1.0",
        "train.max_samples": str(NO_SAMPLE_CAP),
    }
    stage, offload = zero_settings(deepspeed)  # the recipe's DeepSpeed config, as recipe_checks.check_deepspeed read it
    values["train.ds_stage"], values["train.ds_offload"] = str(stage) if stage else "none", offload
    for key, field in _FIELDS.items():
        if key in args:
            values[field] = args[key]
    for key, field in _TEXT_FIELDS.items():
        if key in args:
            values[field] = str(args[key])
    extra = {key: value for key, value in args.items() if key not in _FIELDS and key not in _TEXT_FIELDS and key not in _DERIVED}
    if args.get("flash_attn") and values["top.booster"] != "flashattn2":
        extra["flash_attn"] = args["flash_attn"]
    extra.update({key: None for key in _WEBUI_ADDS if key not in args})
    values["train.extra_args"] = json.dumps(extra, ensure_ascii=False)
    return values


def launch(recipe: str, dataset_dir: str, host: str, port: int, api_key: str | None) -> None:
    """The WebUI with the recipe's values in the training form at every page load."""
    from caretune import lf
    from caretune.recipe import load_recipe
    from caretune.training.recipe_checks import PreflightError, check_deepspeed

    args = load_recipe(recipe)
    if not args.get("model_name_or_path"):
        raise PreflightError(f"{recipe}: no model_name_or_path; the WebUI's form needs the model a recipe trains")
    deepspeed = check_deepspeed(Path(recipe), args)
    lf.webui_folders(dataset_dir, f"{WEBUI_STATE_DIR}/cache", f"{WEBUI_STATE_DIR}/config")  # state: ignored folder
    label = model_label(Path(recipe))
    saved = f"{label}-{Path(recipe).stem}.yaml"
    lf.webui_remember(
        label, str(args["model_name_or_path"]), args.get("template", "default"), saved, form_values(args, Path(recipe), deepspeed)
    )
    lf.webui_launch(saved, host, port, (("caretune", api_key),) if api_key else None)
