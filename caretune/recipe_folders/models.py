"""The numbers of each model folder under recipes/ (ModelRecipe) and the shipped folders; every recipe is derived
from them (caretune.recipe_folders.tasks)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from caretune.constants import BASE_MODEL, CUTOFF_LEN, TEMPLATE, TINY_MODEL_DIR
from caretune.recipe import RECIPES_DIR, RunDir

MAX_GPUS = 64  # `recipes new`: GPUs in all (nodes x GPUs per node); past it one pack per GPU is far past 16 a step
DEEPSPEED_DIR = f"{RECIPES_DIR}/deepspeed"
SFT_TASKS = ("lora_sft", "predict", "chat", "export")
DPO_TASKS = ("dpo", "predict_dpo", "chat_dpo", "export_dpo")  # the preference stage, and the SFT+DPO model's use
TASKS = SFT_TASKS + DPO_TASKS
# DPO after SFT. beta 0.1 and learning rate 5e-6: LLaMA-Factory's examples/train_lora/qwen3_lora_dpo.yaml
# (alignment-handbook's zephyr QLoRA DPO takes beta 0.01 at the same rate). One epoch: alignment-handbook's DPO recipes;
# on-policy pairs are few and a second pass over them overfits the judge's taste.
PREF_BETA = 0.1
DPO_LEARNING_RATE = 5.0e-6
DPO_EPOCHS = 1.0


@dataclass(frozen=True)
class ModelRecipe:
    """The numbers of one model folder; every recipe of the folder is derived from them."""

    folder: str
    model: str
    gpus: int  # GPUs per node the recipe is sized for (1 on CPU)
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    cutoff_len: int
    per_device_eval_batch_size: int
    max_new_tokens: int
    logging_steps: int
    save_steps: int
    bf16: bool
    deepspeed: str | None
    num_train_epochs: float | None = None
    max_steps: int | None = None
    note: str = ""
    train_task: str = "lora_sft"  # file name of its training recipe
    neat_packing: bool = False  # rows packed into cutoff_len-token sequences, attention kept within each row
    liger: bool = False  # Liger kernels, among them a fused linear cross-entropy
    flash_attn: str | None = None  # LLaMA-Factory's `flash_attn`; None leaves its default (auto)
    template: str = TEMPLATE
    nodes: int = 1
    activations: str = "checkpointed"  # estimate.ACTIVATION_MODES: gradient checkpointing, none, use_unsloth_gc
    torch_compile: bool = False
    dpo_per_device: int = 2  # preference pairs per device (each a chosen and a rejected sequence, padded)
    dpo_accumulation: int = 2
    dpo_learning_rate: float = DPO_LEARNING_RATE
    dpo_max_steps: int | None = None  # None: DPO_EPOCHS
    general_share: float = 0.0  # share of an epoch's rows drawn from the general set (0: medical data only)
    mix: tuple[float, ...] = ()  # interleave_over's probability per training dataset when general_share > 0

    @property
    def world_size(self) -> int:
        """GPUs (processes) in all: nodes x GPUs per node."""
        return self.nodes * self.gpus

    @property
    def packs_per_step(self) -> int:
        """Rows or packs per optimizer step: per device x GPUs in all x accumulation."""
        return self.per_device_train_batch_size * self.world_size * self.gradient_accumulation_steps

    def path(self, task: str) -> str:
        """Repository-relative path of this folder's recipe for `task`."""
        return f"{RECIPES_DIR}/{self.folder}/{task}.yaml"

    def output_dir(self, task: str) -> str:
        if task in DPO_TASKS:
            return str(RunDir.preferred(self.folder).task(task.removesuffix("_dpo")))
        return str(RunDir.tuned(self.folder).task(task))

    @property
    def pairs_per_step(self) -> int:
        """DPO: preference pairs per optimizer step."""
        return self.dpo_per_device * self.world_size * self.dpo_accumulation


# The walkthrough exactly: LoRA SFT of Qwen3-8B, 2 epochs, per-device batch 24, DeepSpeed, 4 GPUs;
# evaluation with batch 32, cutoff 2048, 1024 new tokens. Kept for comparison as lora_sft_walkthrough.yaml.
QWEN3_8B_WALKTHROUGH = ModelRecipe(
    folder="qwen3-8b",
    model=BASE_MODEL,
    gpus=4,
    per_device_train_batch_size=24,
    gradient_accumulation_steps=1,
    learning_rate=1.0e-4,
    cutoff_len=CUTOFF_LEN,
    per_device_eval_batch_size=32,
    max_new_tokens=1024,
    logging_steps=10,
    save_steps=500,
    bf16=True,
    deepspeed=f"{DEEPSPEED_DIR}/ds_z2.json",
    num_train_epochs=2.0,
    train_task="lora_sft_walkthrough",
)
# The default: the same data, epochs, cutoff and learning rate, trained on packed rows (no padding
# between them, attention isolated per row), with Liger's fused cross-entropy and sdpa attention.
# Speed keys from a measurement on one H100 (benchmarks/README.md, 2026-11-26): sdpa with four packs per
# device gave 1.74x the tokens/s of one pack, and 8 packs only 4% more. LLaMA-Factory's neat packing with
# FlashAttention-2 asserts one pack per device, so fa2 stays an option (not yet measured). On 4 GPUs that is
# 16 packs of up to 2048 tokens a step (about 175 ChatMed rows; the walkthrough takes 96); `caretune plan`
# prints both.
QWEN3_8B = replace(
    QWEN3_8B_WALKTHROUGH,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    train_task="lora_sft",
    neat_packing=True,
    liger=True,
    flash_attn="sdpa",
)
# The CPU stand-in (`caretune tiny-model`): the same tasks, small enough for CI and `make demo`. A step's cost on
# CPU is its tokens times the 152k-entry vocabulary (the projection and its loss are nearly all of it), so it trains
# 2 rows a step: 20 steps still show the loss curve, each step half the tokens of 4 rows (benchmarks/README.md,
# 2026-12-07: the 20 steps 36 s at 4 rows, 17 s at 2).
TINY_QWEN3 = ModelRecipe(
    folder="tiny-qwen3",
    model=TINY_MODEL_DIR,
    gpus=1,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    learning_rate=1.0e-3,
    cutoff_len=512,
    per_device_eval_batch_size=4,
    max_new_tokens=32,
    logging_steps=1,
    save_steps=10,
    bf16=False,
    deepspeed=None,
    max_steps=20,
    note="random weights: its answers are noise",
    dpo_accumulation=1,
    dpo_learning_rate=1.0e-3,
    dpo_max_steps=10,
)
MODELS = (QWEN3_8B, TINY_QWEN3)
EXTRA_TRAININGS = (QWEN3_8B_WALKTHROUGH,)  # further training recipes beside a folder's lora_sft.yaml
