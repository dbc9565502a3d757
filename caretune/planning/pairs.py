"""`caretune plan` for a DPO recipe: pairs, chosen and rejected tokens, the padding LLaMA-Factory's pairwise collator
adds, the policy's and the reference's forward passes, memory per GPU, and time.

LLaMA-Factory's pairwise processor encodes each pair as two sequences, prompt + chosen and prompt + rejected, cut to
one budget (`caretune.prep.lengths.TurnLengths.pair_lengths`); no packing (it refuses `neat_packing` outside SFT).
Its collator puts a micro-batch's chosen and rejected sequences in one batch padded to the longest, rounded up to 8.
Each step the policy runs forward and backward over that batch and, with LoRA and no `ref_model`, the reference is
the same weights with the adapter switched off: one more forward pass over the same tokens, no gradients.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from caretune.planning import estimate
from caretune.planning.figures import duration_text
from caretune.planning.plan import resolve_arch
from caretune.planning.recipe_settings import PlanError, TrainSettings
from caretune.planning.replay import dataset_lengths


@dataclass(frozen=True)
class PairPlan:
    """Every figure of a DPO plan; `--json` prints these fields in this order."""

    recipe: str
    model: str
    gpu: str
    gpus: int
    datasets: dict[str, int]  # pairs per dataset, as LLaMA-Factory keeps them
    pairs: int
    prompt_tokens_per_epoch: int  # once per pair (each of its two sequences holds it)
    chosen_tokens_per_epoch: int
    rejected_tokens_per_epoch: int
    processed_tokens_per_epoch: int  # both sequences of every pair, padding included: one forward pass over them
    non_padding_share: float
    micro_batches_per_gpu_epoch: int
    optimizer_steps: int
    forward_passes: str
    memory_bytes: dict[str, int]
    memory_limit_bytes: int
    fits: bool
    reference_share_of_compute: float  # the reference's forward pass, of the step's hardware FLOPs
    processed_tokens_per_s_per_gpu: float
    throughput_source: str
    wall_seconds: int
    gpu_hours: float

    def to_json(self) -> dict:
        return asdict(self)


def batch_tokens(pairs: list[tuple[int, int, int]], micro_batch: int, seed: int) -> tuple[int, int, int]:
    """(micro-batches, processed tokens, largest micro-batch's tokens) over one shuffled epoch: each micro-batch holds
    its pairs' chosen and rejected sequences, padded to the longest rounded up to 8."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    batches = processed = peak = 0
    for start in range(0, len(order), micro_batch):
        batch = order[start : start + micro_batch]
        longest = max(prompt + max(chosen, rejected) for prompt, chosen, rejected in batch)
        tokens = 2 * len(batch) * estimate.padded_length(longest)
        batches, processed, peak = batches + 1, processed + tokens, max(peak, tokens)
    return batches, processed, peak


def pair_lengths(settings: TrainSettings, use_cache: bool) -> dict[str, list[tuple[int, int, int]]]:
    """(prompt, chosen, rejected) tokens of every pair LLaMA-Factory keeps, per dataset, at the recipe's cutoff."""
    import tempfile

    from caretune.prep.lengths import TokenizerSource
    from caretune.prep.tokenizer import TokenizerError

    tokenizer = TokenizerSource(settings.model)
    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in settings.datasets:
            try:
                data = dataset_lengths(settings, name, tokenizer, scratch, use_cache)
            except TokenizerError as err:
                raise PlanError(str(err)) from None
            if not data.ranking:
                raise PlanError(f"{name}: not a preference set (ranking: true); stage: dpo trains on pairs")
            found[name] = data.pair_lengths(settings.cutoff_len)
    return found


def make_pair_plan(
    recipe_path: str, settings: TrainSettings, *, gpus: int, gpu_name: str, hfu: float | None = None, use_cache: bool = True
) -> PairPlan:
    """The DPO plan of a recipe `plan.read_recipe` read."""
    if gpu_name not in estimate.GPUS:
        raise PlanError(f"unknown GPU {gpu_name!r}; one of {', '.join(estimate.GPUS)}")
    gpu = estimate.GPUS[gpu_name]
    arch, _ = resolve_arch(settings.model)
    per_dataset = pair_lengths(settings, use_cache)
    pairs = [pair for found in per_dataset.values() for pair in found]
    if not pairs:
        raise PlanError(f"{recipe_path}: its datasets have no pairs LLaMA-Factory keeps")
    micro_batches, processed, peak = batch_tokens(pairs, settings.micro_batch, settings.seed)
    micro_batches_per_gpu = math.ceil(micro_batches / gpus)
    steps = settings.max_steps or estimate.optimizer_steps(micro_batches_per_gpu, settings.accumulation, settings.epochs)
    epochs_run = steps * settings.accumulation / micro_batches_per_gpu
    real = sum(2 * prompt + chosen + rejected for prompt, chosen, rejected in pairs)
    memory = estimate.memory_breakdown(
        arch,
        micro_batch_tokens=peak,
        gpus=gpus,
        lora_rank=settings.lora_rank,
        zero_stage=settings.zero_stage,
        offload=settings.offload,
        fused_cross_entropy=settings.liger,
        activations=settings.activations,
    )
    limit = int(gpu.memory_gib * estimate.GIB * estimate.MEMORY_HEADROOM)
    context = estimate.causal_context([prompt + answer for prompt, chosen, rejected in pairs for answer in (chosen, rejected)])
    train_flops = estimate.hardware_flops_per_token(arch, context, settings.gradient_checkpointing)
    reference_flops = estimate.model_flops_per_token(arch, context) / 3  # one forward pass of the three training takes
    assumed = hfu if hfu is not None else estimate.DEFAULT_HFU
    rate = assumed * gpu.bf16_tflops * 1e12 / (train_flops + reference_flops)  # processed tokens a second a GPU
    seconds = processed * epochs_run / (rate * gpus)
    return PairPlan(
        recipe=recipe_path,
        model=settings.model,
        gpu=gpu.name,
        gpus=gpus,
        datasets={name: len(found) for name, found in per_dataset.items()},
        pairs=len(pairs),
        prompt_tokens_per_epoch=sum(prompt for prompt, _, _ in pairs),
        chosen_tokens_per_epoch=sum(chosen for _, chosen, _ in pairs),
        rejected_tokens_per_epoch=sum(rejected for _, _, rejected in pairs),
        processed_tokens_per_epoch=processed,
        non_padding_share=round(real / processed, 4),
        micro_batches_per_gpu_epoch=micro_batches_per_gpu,
        optimizer_steps=steps,
        forward_passes="policy: forward and backward; reference (the SFT model, adapter off): forward only",
        memory_bytes=memory,
        memory_limit_bytes=limit,
        fits=memory["total"] <= limit,
        reference_share_of_compute=round(reference_flops / (train_flops + reference_flops), 4),
        processed_tokens_per_s_per_gpu=round(rate, 1),
        throughput_source=f"assumed {assumed:.0%} HFU of {gpu.bf16_tflops:g} TFLOP/s bf16, the reference's forward pass added",
        wall_seconds=round(seconds),
        gpu_hours=round(seconds * gpus / 3600, 2),
    )


def format_pair_plan(plan: PairPlan) -> str:
    """The DPO plan as a person reads it."""
    gib = estimate.GIB
    memory = plan.memory_bytes
    sets = ", ".join(f"{name} {pairs:,}" for name, pairs in plan.datasets.items())
    return "\n".join(
        [
            f"plan for {plan.recipe} (DPO): {plan.model} on {plan.gpus} x {plan.gpu}",
            f"  pairs: {plan.pairs:,} ({sets}); per epoch: prompts {plan.prompt_tokens_per_epoch:,} tokens, chosen "
            f"{plan.chosen_tokens_per_epoch:,}, rejected {plan.rejected_tokens_per_epoch:,}",
            f"  processed: {plan.processed_tokens_per_epoch:,} tokens an epoch, both sequences of each pair padded to "
            f"the batch's longest ({plan.non_padding_share:.1%} non-padding; no packing outside SFT)",
            f"  {plan.micro_batches_per_gpu_epoch:,} micro-batches per GPU per epoch, {plan.optimizer_steps:,} optimizer steps",
            f"  passes: {plan.forward_passes} ({plan.reference_share_of_compute:.0%} of the compute)",
            f"  memory per GPU: {memory['total'] / gib:.2f} GiB of {plan.memory_limit_bytes / gib:.1f} GiB usable "
            f"({'fits' if plan.fits else 'DOES NOT FIT'}; the reference reuses the policy's weights)",
            f"  throughput: {plan.processed_tokens_per_s_per_gpu:,.0f} processed tokens/s per GPU ({plan.throughput_source})",
            f"estimate: {duration_text(plan.wall_seconds)} wall, {plan.gpu_hours:.1f} GPU-hours",
        ]
    )
