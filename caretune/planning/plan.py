"""`caretune plan RECIPE`: rows, tokens, padding, steps, memory, time and GPU-hours before a run.

The recipe's datasets are tokenized with the model's tokenizer and template through LLaMA-Factory's
loading (once, then cached: `caretune.prep.lengths`); truncation, batching and packing are then replayed as
LLaMA-Factory and the Hugging Face Trainer do them. Formulas live in `caretune.planning.estimate`.

`--json` is the `Plan` dataclass (caretune.planning.figures), field by field (its comments say what each figure is).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from caretune.planning import estimate
from caretune.planning.figures import Plan, Throughput
from caretune.planning.recipe_settings import PlanError, TrainSettings, read_recipe
from caretune.planning.replay import Batching, Tokenized, quantiles, replay, tokenize

LOW_PACK_FILL = 0.9  # below this, a plan says why packs are part-empty


def _arch_from_file(model: str, config_path: str | Path) -> estimate.Arch:
    return estimate.Arch.from_config(model, json.loads(Path(config_path).read_text(encoding="utf-8")))


def resolve_arch(model: str) -> tuple[estimate.Arch, str]:
    """The model's architecture: its local config.json, the Hugging Face cache, the shipped Qwen3 table, the hub."""
    local = Path(model) / "config.json"
    if local.exists():
        return _arch_from_file(model, local), str(local)
    from caretune.hub import hf_offline

    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a repo id
        cached = None
    if isinstance(cached, str):
        return _arch_from_file(model, cached), cached
    if model in estimate.QWEN3_FAMILY:
        return estimate.QWEN3_FAMILY[model], "caretune's Qwen3 family table"
    if not hf_offline():
        try:
            from huggingface_hub import hf_hub_download

            fetched = hf_hub_download(model, "config.json")
            return _arch_from_file(model, fetched), fetched
        except Exception as err:
            raise PlanError(f"{model}: no config.json locally and the hub failed: {str(err).splitlines()[0]}") from None
    raise PlanError(f"{model}: no config.json locally, and not one of {', '.join(estimate.QWEN3_FAMILY)}")


def load_bench(path: str, settings: TrainSettings, arch: estimate.Arch) -> dict:
    """The fastest bench variant of `path` that trains as the recipe does (packing, Liger, how activations are
    kept, torch_compile, and the attention when the recipe names one), run on the recipe's shape."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PlanError(f"{path}: cannot read bench results: {str(err).splitlines()[0]}") from None
    if report.get("params") != arch.params():
        raise PlanError(
            f"{path}: the bench ran {report.get('model')} ({report.get('params')} parameters), the recipe "
            f"trains {settings.model} ({arch.params()}); run `caretune bench --model {settings.model}` on a GPU"
        )
    measured = [v for v in report.get("variants", []) if v.get("processed_tokens_per_s")]
    wanted = {
        "packing": settings.packing,
        "liger": settings.liger,
        "activations": settings.activations,
        "compiled": settings.torch_compile,
        **({"attention": settings.flash_attn} if settings.flash_attn in ("sdpa", "fa2") else {}),
    }
    defaults = {"activations": "checkpointed", "compiled": False}  # bench results from before these variants
    matching = [v for v in measured if all(v.get(key, defaults.get(key)) == value for key, value in wanted.items())]
    if not matching:
        names = ", ".join(v["name"] for v in measured) or "none measured"
        asked = ", ".join(f"{key}={value}" for key, value in wanted.items())
        raise PlanError(f"{path}: no measured variant with {asked} ({names})")
    best = max(matching, key=lambda v: v["processed_tokens_per_s"])
    return {**best, "device": report.get("device", "?")}


def largest_micro_batch(arch: estimate.Arch, tokens_per_item: int, limit: int, memory_kwargs: dict) -> int:
    """Most rows (or packs) per device whose memory estimate stays within `limit`."""
    size = 0
    while (
        size < 4096
        and estimate.memory_breakdown(arch, micro_batch_tokens=(size + 1) * tokens_per_item, **memory_kwargs)["total"] <= limit
    ):
        size += 1
    return size


FA2_LONG_PACK = 8192  # FlashAttention-2 with neat packing takes one pack per device: one long pack instead


def memory_variants(arch: estimate.Arch, tokens_per_item: int, micro_batch: int, limit: int, memory_kwargs: dict) -> dict:
    """Memory at the recipe's micro-batch and the largest micro-batch that fits, for each way of keeping
    activations (gradient checkpointing, none, use_unsloth_gc), and for one FA2 pack of FA2_LONG_PACK tokens."""
    variants = {}
    for name, mode in (("checkpointing", "checkpointed"), ("no_checkpointing", "kept"), ("unsloth_gc", "offloaded")):
        kwargs = {**memory_kwargs, "activations": mode}
        memory = estimate.memory_breakdown(arch, micro_batch_tokens=tokens_per_item * micro_batch, **kwargs)
        variants[name] = {
            "total_bytes": memory["total"],
            "host_bytes": memory["host_activations"],
            "max_micro_batch": largest_micro_batch(arch, tokens_per_item, limit, kwargs),
        }
    long_pack = estimate.memory_breakdown(arch, micro_batch_tokens=FA2_LONG_PACK, **memory_kwargs)
    variants["fa2_one_long_pack"] = {
        "tokens": FA2_LONG_PACK,
        "total_bytes": long_pack["total"],
        "fits": long_pack["total"] <= limit,
    }
    return variants


def make_plan(
    recipe_path: str,
    *,
    gpus: int,
    gpu_name: str,
    sample: int | None = None,
    rows_override: dict[str, int] | None = None,
    bench: str | None = None,
    mfu: float | None = None,
    hfu: float | None = None,
    attention: str | None = None,
    use_cache: bool = True,
    length_profiles: dict[str, str] | None = None,
) -> Plan:
    """Every figure of a plan: tokenize, replay the batching, then memory, throughput and time.
    `length_profiles`: dataset -> a length profile its rows are drawn from instead of tokenizing (tokenize)."""
    settings = read_recipe(recipe_path)
    if settings.stage != "sft":
        raise PlanError(f"{recipe_path}: stage {settings.stage}: caretune.planning.pairs plans preference stages")
    if gpu_name not in estimate.GPUS:
        raise PlanError(f"unknown GPU {gpu_name!r}; one of {', '.join(estimate.GPUS)}")
    gpu = estimate.GPUS[gpu_name]
    arch, arch_source = resolve_arch(settings.model)
    rows_override, length_profiles = rows_override or {}, length_profiles or {}
    for option, given in (("--rows", rows_override), ("--lengths", length_profiles)):
        unknown = sorted(set(given) - set(settings.datasets))
        if unknown:
            raise PlanError(f"{option} names {', '.join(unknown)}, not a dataset of {recipe_path} ({','.join(settings.datasets)})")

    data = tokenize(settings, recipe_path, sample, rows_override, use_cache, length_profiles)
    attention = attention or ("fa2" if settings.flash_attn == "fa2" else "sdpa")
    epoch = replay(settings, data.lengths, attention)
    real = sum(data.lengths)
    micro_batches_per_gpu = math.ceil(round(epoch.items * data.scale) / (settings.micro_batch * gpus))
    steps = (
        settings.max_steps
        if settings.max_steps is not None
        else estimate.optimizer_steps(micro_batches_per_gpu, settings.accumulation, settings.epochs)
    )
    epochs_run = steps * settings.accumulation / micro_batches_per_gpu

    memory, limit, max_micro_batch, variants = _memory(settings, arch, gpu, gpus, epoch.peak_tokens)
    share = real / epoch.processed
    throughput, processed_rate = _throughput(settings, arch, gpu, share, estimate.causal_context(data.lengths), bench, mfu, hfu)
    seconds = epoch.processed * data.scale * epochs_run / (processed_rate * gpus)
    return Plan(
        recipe=recipe_path,
        model=settings.model,
        arch_source=arch_source,
        gpu=gpu.name,
        gpus=gpus,
        datasets=data.datasets,
        rows=sum(d.rows_kept if d.mixed_rows is None else d.mixed_rows for d in data.datasets),
        real_tokens_per_epoch=round(real * data.scale),
        processed_tokens_per_epoch=round(epoch.processed * data.scale),
        non_padding_share=round(share, 4),
        micro_batches_per_gpu_epoch=micro_batches_per_gpu,
        rows_per_micro_batch=round(len(data.lengths) / epoch.micro_batches, 2),
        optimizer_steps=steps,
        packing="neat" if settings.neat_packing else ("packed" if settings.packing else "none"),
        attention=attention,
        pack_fill=round(epoch.pack_fill, 4) if epoch.pack_fill is not None else None,
        length_quantiles=quantiles(data.lengths),
        params=arch.params(),
        lora_params=arch.lora_params(settings.lora_rank),
        memory_bytes=memory,
        memory_limit_bytes=limit,
        fits=memory["total"] <= limit,
        max_micro_batch=max_micro_batch,
        memory_variants=variants,
        throughput=throughput,
        wall_seconds=round(seconds),
        gpu_hours=round(seconds * gpus / 3600, 2),
        warnings=_warnings(settings, data, epoch, attention, memory, limit, gpu, max_micro_batch, sample),
    )


def _memory(settings: TrainSettings, arch: estimate.Arch, gpu, gpus: int, peak_tokens: int) -> tuple[dict, int, int, dict]:
    """(memory breakdown at the largest micro-batch, the GPU's usable bytes, the largest micro-batch that fits, the
    activation and attention variants)."""
    memory_kwargs = {
        "gpus": gpus,
        "lora_rank": settings.lora_rank,
        "zero_stage": settings.zero_stage,
        "offload": settings.offload,
        "fused_cross_entropy": settings.liger,
    }
    memory = estimate.memory_breakdown(arch, micro_batch_tokens=peak_tokens, activations=settings.activations, **memory_kwargs)
    limit = int(gpu.memory_gib * estimate.GIB * estimate.MEMORY_HEADROOM)
    max_micro_batch = largest_micro_batch(
        arch, peak_tokens // settings.micro_batch, limit, {**memory_kwargs, "activations": settings.activations}
    )
    variants = memory_variants(arch, peak_tokens // settings.micro_batch, settings.micro_batch, limit, memory_kwargs)

    return memory, limit, max_micro_batch, variants


def _throughput(
    settings: TrainSettings,
    arch: estimate.Arch,
    gpu: estimate.Gpu,
    share: float,
    context: float,
    bench: str | None,
    mfu: float | None,
    hfu: float | None = None,
) -> tuple[Throughput, float]:
    """Tokens per second per GPU, measured by `caretune bench` or from an assumed utilisation: `hfu` (default
    40%), or `mfu` converted to it (and the unrounded rate)."""
    checkpointing = settings.gradient_checkpointing
    if bench:
        measured = load_bench(bench, settings, arch)
        processed_rate = measured["processed_tokens_per_s"]
        source = f"caretune bench {bench}: variant {measured['name']} on {measured['device']}"
    elif mfu is not None:
        per_token = estimate.model_flops_per_token(arch, context)
        processed_rate = mfu * gpu.bf16_tflops * 1e12 / per_token / share
        source = f"assumed {mfu:.0%} MFU of {gpu.bf16_tflops:g} TFLOP/s bf16 (run `caretune bench` to measure)"
    else:
        assumed = hfu if hfu is not None else estimate.DEFAULT_HFU
        processed_rate = estimate.tokens_per_second(arch, gpu, assumed, context, checkpointing)
        source = f"assumed {assumed:.0%} HFU of {gpu.bf16_tflops:g} TFLOP/s bf16 (run `caretune bench` to measure)"
    real_rate = processed_rate * share
    return Throughput(
        source=source,
        processed_tokens_per_s_per_gpu=round(processed_rate, 1),
        real_tokens_per_s_per_gpu=round(real_rate, 1),
        mfu=round(estimate.mfu(arch, gpu, real_rate, context), 4),
        hfu=round(estimate.hfu(arch, gpu, real_rate, context, checkpointing), 4),
    ), processed_rate


def _warnings(
    settings: TrainSettings,
    data: Tokenized,
    epoch: Batching,
    attention: str,
    memory: dict,
    limit: int,
    gpu: estimate.Gpu,
    max_micro_batch: int,
    sample: int | None,
) -> list[str]:
    """What a person should know before launching: memory, packing and sampling."""
    warnings = []
    if memory["total"] > limit:
        warnings.append(
            f"memory: {memory['total'] / estimate.GIB:.1f} GiB per GPU exceeds "
            f"{estimate.MEMORY_HEADROOM:.0%} of the {gpu.name}'s {gpu.memory_gib:g} GiB; "
            f"largest micro-batch that fits: {max_micro_batch}"
        )
    if settings.neat_packing and attention == "fa2" and settings.micro_batch != 1:
        warnings.append("neat_packing with flash attention 2 needs per_device_train_batch_size: 1 in LLaMA-Factory")
    if epoch.pack_fill is not None and epoch.pack_fill < LOW_PACK_FILL:
        workers = settings.preprocessing_num_workers or 1
        warnings.append(
            f"packing: packs are {epoch.pack_fill:.0%} full. LLaMA-Factory packs each of its "
            f"{workers} preprocessing shard(s) (~{len(data.lengths) // workers} rows) and "
            f"each {settings.preprocessing_batch_size}-row batch on its own; with few rows, lower "
            "preprocessing_num_workers"
        )
    tokenized_rows = sum(d.tokenized for d in data.datasets)
    planned_rows = sum(d.rows for d in data.datasets)
    if sample is not None and tokenized_rows < planned_rows:
        warnings.append(f"sampled {tokenized_rows} of {planned_rows} rows: token figures are extrapolated")
    return warnings
