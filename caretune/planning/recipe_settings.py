"""What a training recipe says about batching, packing and memory (TrainSettings), read with LLaMA-Factory's and
transformers' own defaults for every key it leaves out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caretune import lf
from caretune.basics.errors import UserError
from caretune.constants import DATASET_INFO, TEMPLATE
from caretune.recipe import names_in

NUMBERS = (  # (key, type, minimum) of the recipe's numbers a plan reads
    ("cutoff_len", int, 2),
    ("per_device_train_batch_size", int, 1),
    ("gradient_accumulation_steps", int, 1),
    ("num_train_epochs", float, 0),
    ("max_steps", int, 1),
    ("lora_rank", int, 1),
)
SUPPORTED_MIX = (None, "concat", "interleave_under", "interleave_over", "interleave_once")


class PlanError(UserError):
    """The plan cannot be made; the message names the file or key."""


@dataclass(frozen=True)
class TrainSettings:
    """What a LoRA SFT recipe says about batching, packing and memory."""

    model: str
    datasets: list[str]
    dataset_dir: str
    template: str
    enable_thinking: bool
    mask_history: bool
    preserve_thinking: bool
    cutoff_len: int
    packing: bool
    neat_packing: bool
    micro_batch: int
    accumulation: int
    epochs: float
    max_steps: int | None
    lora_rank: int
    zero_stage: int
    offload: bool
    liger: bool
    flash_attn: str
    preprocessing_batch_size: int
    preprocessing_num_workers: int | None
    seed: int
    mix_strategy: str = "concat"  # LLaMA-Factory's mix_strategy
    mix: tuple[float, ...] | None = None  # interleave_probs per dataset under an interleave strategy (None: even)
    gradient_checkpointing: bool = True  # LLaMA-Factory's default; `disable_gradient_checkpointing: true` turns it off
    unsloth_gc: bool = False  # `use_unsloth_gc`: checkpoints wait in host memory
    torch_compile: bool = False
    stage: str = "sft"  # sft, or dpo (caretune.planning.pairs plans it)

    @property
    def activations(self) -> str:
        """How activations are kept (caretune.planning.estimate.ACTIVATION_MODES)."""
        return "kept" if not self.gradient_checkpointing else "offloaded" if self.unsloth_gc else "checkpointed"

    @property
    def packed_cutoff(self) -> int:
        """LLaMA-Factory packs to `cutoff_len - 1` tokens and pads each pack to `cutoff_len`."""
        return self.cutoff_len - 1


def read_recipe(path: str) -> TrainSettings:
    """The training settings a plan needs, from a recipe preflight accepts; bad values are PlanErrors."""
    from caretune.recipe import RecipeError, load_recipe
    from caretune.training.recipe_checks import check_deepspeed, zero_settings

    try:
        recipe = load_recipe(path)
        deepspeed = check_deepspeed(Path(path), recipe)  # relative to the current directory, as LLaMA-Factory reads it
    except RecipeError as err:
        raise PlanError(str(err)) from None
    if recipe.get("stage", "sft") not in ("sft", "dpo") or recipe.get("finetuning_type", "lora") != "lora":
        raise PlanError(f"{path}: plan estimates LoRA SFT and DPO recipes (stage: sft or dpo, finetuning_type: lora)")
    if not recipe.get("dataset"):
        raise PlanError(f"{path}: no `dataset` to plan for")
    if recipe.get("mix_strategy") not in SUPPORTED_MIX:
        raise PlanError(
            f"{path}: mix_strategy {recipe['mix_strategy']!r} is not one of LLaMA-Factory's: {', '.join(SUPPORTED_MIX[1:])}"
        )
    mix = mix_probabilities(path, recipe)
    zero_stage, offload = zero_settings(deepspeed)
    dataset_dir = recipe.get("dataset_dir", "data")
    if not (Path(dataset_dir) / DATASET_INFO).exists():
        raise PlanError(
            f"{path}: dataset_dir {dataset_dir!r} has no {DATASET_INFO} (relative paths start at the "
            "current directory, as in LLaMA-Factory); run from the project root or convert a dataset first"
        )

    def number(key: str, default, kind=int, minimum=1):
        value = recipe.get(key, default)
        try:
            parsed = kind(value)
            if isinstance(value, bool) or parsed < minimum or (kind is int and parsed != float(value)):
                raise ValueError
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise PlanError(f"{path}: {key} must be {what} of at least {minimum}, not {value!r}") from None
        return parsed

    for key, kind, minimum in NUMBERS:  # the recipe's own values, checked before LLaMA-Factory is loaded for defaults
        if recipe.get(key) is not None and not (key == "max_steps" and recipe[key] == -1):
            number(key, None, kind, minimum)
    defaults = lf.field_defaults()  # what LLaMA-Factory and transformers give a key the recipe leaves out
    return TrainSettings(
        model=recipe.get("model_name_or_path") or "",
        datasets=names_in(recipe["dataset"]),
        dataset_dir=dataset_dir,
        template=recipe.get("template", TEMPLATE),
        enable_thinking=recipe.get("enable_thinking", defaults["enable_thinking"]) is not False,
        mask_history=bool(recipe.get("mask_history")),
        preserve_thinking=bool(recipe.get("preserve_thinking")),
        cutoff_len=number("cutoff_len", defaults["cutoff_len"], minimum=2),
        packing=bool(recipe.get("packing") or recipe.get("neat_packing")),
        neat_packing=bool(recipe.get("neat_packing")),
        micro_batch=number("per_device_train_batch_size", defaults["per_device_train_batch_size"]),
        accumulation=number("gradient_accumulation_steps", defaults["gradient_accumulation_steps"]),
        epochs=number("num_train_epochs", defaults["num_train_epochs"], kind=float, minimum=0),
        max_steps=number("max_steps", -1) if recipe.get("max_steps", -1) not in (None, -1) else None,
        lora_rank=number("lora_rank", defaults["lora_rank"]),
        zero_stage=zero_stage,
        offload=offload,
        liger=bool(recipe.get("enable_liger_kernel")),
        flash_attn=str(recipe.get("flash_attn", "auto")),
        preprocessing_batch_size=int(recipe.get("preprocessing_batch_size", defaults["preprocessing_batch_size"])),
        preprocessing_num_workers=recipe.get("preprocessing_num_workers"),
        seed=int(recipe.get("seed", defaults["seed"])),
        gradient_checkpointing=not recipe.get("disable_gradient_checkpointing", False),
        mix_strategy=recipe.get("mix_strategy") or "concat",
        mix=mix,
        unsloth_gc=bool(recipe.get("use_unsloth_gc")),
        torch_compile=bool(recipe.get("torch_compile")),
        stage=recipe.get("stage", "sft"),
    )


def mix_probabilities(path: str, recipe: dict) -> tuple[float, ...] | None:
    """interleave_probs of an interleave recipe, checked (one per dataset, positive, summing to 1); None without them."""
    if not str(recipe.get("mix_strategy") or "").startswith("interleave") or not recipe.get("interleave_probs"):
        return None
    names = names_in(recipe["dataset"])
    try:
        probs = tuple(float(p) for p in str(recipe.get("interleave_probs") or "").split(","))
    except ValueError:
        probs = ()
    if len(probs) != len(names) or any(p <= 0 for p in probs) or abs(sum(probs) - 1) > 1e-8:  # numpy's own check
        raise PlanError(
            f"{path}: interleave_probs {recipe.get('interleave_probs')!r} must give one positive share per dataset "
            f"({len(names)}), summing to 1"
        )
    return probs
