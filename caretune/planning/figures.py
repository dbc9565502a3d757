"""Every figure of a plan (`--json` prints the Plan dataclass field by field), and the plan as a person reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from caretune.planning import estimate
from caretune.planning.replay import DatasetRows


@dataclass(frozen=True)
class Throughput:
    source: str  # a `caretune bench` file, or the assumed HFU
    processed_tokens_per_s_per_gpu: float
    real_tokens_per_s_per_gpu: float
    mfu: float  # model FLOPs utilisation: 4·N + attention per real token (caretune.planning.estimate)
    hfu: float  # hardware FLOPs utilisation: the recomputed forward pass included under gradient checkpointing


@dataclass(frozen=True)
class Plan:
    """Every figure of a plan; `--json` prints these fields in this order."""

    recipe: str
    model: str
    arch_source: str  # where the architecture came from: a config.json, or caretune's Qwen3 table
    gpu: str
    gpus: int
    datasets: list[DatasetRows]
    rows: int  # rows kept, all datasets
    real_tokens_per_epoch: int
    processed_tokens_per_epoch: int  # padding included
    non_padding_share: float
    micro_batches_per_gpu_epoch: int
    rows_per_micro_batch: float
    optimizer_steps: int
    packing: str  # neat, packed or none
    attention: str
    pack_fill: float | None  # real tokens / pack capacity, or None without packing
    length_quantiles: list[int]  # p0..p100 of row tokens
    params: int
    lora_params: int
    memory_bytes: dict[str, int]  # per component, total, and the logits fused and unfused (caretune.planning.estimate)
    memory_limit_bytes: int
    fits: bool
    max_micro_batch: int
    memory_variants: dict[
        str, dict
    ]  # per way of keeping activations: GiB-free bytes at the recipe's batch and the largest micro-batch
    throughput: Throughput
    wall_seconds: int
    gpu_hours: float
    warnings: list[str]

    def to_json(self) -> dict:
        """The plan as `--json` prints it: every field, nested ones as objects."""
        return asdict(self)


def duration_text(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_plan(plan: Plan) -> str:
    """The plan as a person reads it."""
    gib = estimate.GIB
    memory = plan.memory_bytes
    lines = [
        f"plan for {plan.recipe}: {plan.model} ({plan.params / 1e9:.2f}B parameters, "
        f"LoRA {plan.lora_params / 1e6:.1f}M; architecture from {plan.arch_source})",
        f"hardware: {plan.gpus} x {plan.gpu}",
        "",
        "data:",
    ]
    for d in plan.datasets:
        lines.append(
            f"  {d.name:<18} {d.rows:>10,} rows, {d.rows_kept:>10,} kept by preprocessing"
            + (f" (tokenized {d.tokenized:,})" if d.tokenized != d.rows and d.lengths_from == "tokenized" else "")
            + (f" (lengths: {d.lengths_from}, {d.lengths:,} drawn)" if d.lengths_from != "tokenized" else "")
            + (f"; {d.mixed_rows:,} rows an epoch in the mix" if d.mixed_rows is not None else "")
            + f"; {d.tokens_per_epoch:,} tokens an epoch"
        )
    q = plan.length_quantiles
    lines += [
        f"  tokens per row: p50 {q[50]}, p90 {q[90]}, p99 {q[99]}, max {q[100]}",
        f"  per epoch: {plan.real_tokens_per_epoch:,} real tokens, {plan.processed_tokens_per_epoch:,} "
        f"processed ({plan.non_padding_share:.1%} non-padding; packing: {plan.packing}"
        + (f", packs {plan.pack_fill:.1%} full" if plan.pack_fill is not None else "")
        + f"; attention: {plan.attention})",
        f"  {plan.rows_per_micro_batch:g} rows per micro-batch, {plan.micro_batches_per_gpu_epoch:,} "
        f"micro-batches per GPU per epoch, {plan.optimizer_steps:,} optimizer steps",
        "",
        "memory per GPU (estimate; formulas in caretune/planning/estimate.py):",
    ]
    for key in ("weights", "lora_states", "checkpointed_activations", "recomputed_layer", "kept_activations", "logits", "overhead"):
        lines.append(f"  {key:<26} {memory[key] / gib:8.2f} GiB")
    lines += [
        f"  {'total':<26} {memory['total'] / gib:8.2f} GiB of {plan.memory_limit_bytes / gib:.1f} GiB usable "
        f"({'fits' if plan.fits else 'DOES NOT FIT'}); largest micro-batch that fits: {plan.max_micro_batch}",
        f"  logits: {memory['logits_unfused'] / gib:.2f} GiB unfused, {memory['logits_fused'] / gib:.2f} GiB "
        f"with a fused linear cross-entropy (enable_liger_kernel)",
    ]
    v = plan.memory_variants
    lines += [
        "  by activations: "
        + "; ".join(
            f"{name.replace('_', ' ')} {v[name]['total_bytes'] / gib:.1f} GiB (largest micro-batch {v[name]['max_micro_batch']})"
            for name in ("checkpointing", "no_checkpointing", "unsloth_gc")
        )
        + f"; FA2 with one {v['fa2_one_long_pack']['tokens']}-token pack {v['fa2_one_long_pack']['total_bytes'] / gib:.1f} GiB"
        + ("" if v["fa2_one_long_pack"]["fits"] else " (does not fit)"),
        "",
    ]
    t = plan.throughput
    lines += [
        f"throughput: {t.processed_tokens_per_s_per_gpu:,.0f} processed tokens/s per GPU, "
        f"{t.real_tokens_per_s_per_gpu:,.0f} real ({t.mfu:.0%} MFU, {t.hfu:.0%} HFU); {t.source}",
        f"estimate: {duration_text(plan.wall_seconds)} wall, {plan.gpu_hours:.1f} GPU-hours",
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
