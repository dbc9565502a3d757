"""`caretune plan RECIPE`: rows, tokens, padding, steps, memory, time and GPU-hours before a run.

The recipe's datasets are tokenized with the model's tokenizer and template through LLaMA-Factory's
loading (once, then cached: `caretune.prep.lengths`); truncation, batching and packing are then replayed as
LLaMA-Factory and the Hugging Face Trainer do them. Formulas live in `caretune.planning.estimate`.

`--json` is the `Plan` dataclass below, field by field (its comments say what each figure is).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from caretune import lf
from caretune.basics.errors import UserError
from caretune.constants import DATASET_INFO, TEMPLATE
from caretune.planning import estimate
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
LOW_PACK_FILL = 0.9  # below this, a plan says why packs are part-empty


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
    from caretune.training.preflight import check_deepspeed, zero_settings

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


def contiguous_shards(count: int, shards: int) -> list[range]:
    """How `datasets.map(num_proc=shards)` splits `count` rows."""
    shards = max(1, min(shards, count))
    div, mod = divmod(count, shards)
    bounds, start = [], 0
    for index in range(shards):
        end = start + div + (1 if index < mod else 0)
        bounds.append(range(start, end))
        start = end
    return bounds


def pack(lengths: list[int], capacity: int, batch_size: int, num_proc: int | None) -> list[int]:
    """Real tokens of every pack, as LLaMA-Factory's packed preprocessing forms them (greedy knapsack per map batch)."""
    packs = []
    for shard in contiguous_shards(len(lengths), num_proc or 1):
        for start in range(shard.start, shard.stop, batch_size):
            packs.extend(lf.greedy_packs(lengths[start : min(start + batch_size, shard.stop)], capacity))
    return packs


def micro_batch_tokens(items: list[int], micro_batch: int, seed: int, fixed_length: int | None) -> tuple[int, int]:
    """(micro-batches, processed tokens) over one shuffled epoch.

    Each micro-batch is padded to its longest item rounded up to a multiple of 8, or holds
    `fixed_length` tokens per item (packs padded to the cutoff).
    """
    order = list(items)
    random.Random(seed).shuffle(order)
    batches = processed = 0
    for start in range(0, len(order), micro_batch):
        batch = order[start : start + micro_batch]
        batches += 1
        processed += len(batch) * (fixed_length if fixed_length is not None else estimate.padded_length(max(batch)))
    return batches, processed


def quantiles(lengths: list[int]) -> list[int]:
    """p0, p1, ..., p100 of the row lengths (nearest rank)."""
    from caretune.prep.lengths import percentile

    ordered = sorted(lengths)
    return [ordered[0] if ordered else 0] + [percentile(ordered, q) for q in range(1, 101)]


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


@dataclass(frozen=True)
class DatasetRows:
    name: str
    rows: int  # counted, or given with --rows
    tokenized: int  # rows tokenized (fewer with --sample; none with a length profile)
    rows_kept: int  # rows LLaMA-Factory's preprocessing keeps, scaled to `rows`
    lengths: int  # row lengths the plan packs and pads for this dataset
    lengths_from: str  # "tokenized", "resampled from N tokenized rows ...", or "profile NAME"
    mixed_rows: int | None = None  # rows an epoch draws from it under interleave_over (None: concatenated)
    tokens_per_epoch: int = 0  # real tokens an epoch takes from it (cut at cutoff_len, scaled as the whole plan)


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


@dataclass(frozen=True)
class Tokenized:
    """The recipe's datasets as LLaMA-Factory's preprocessing keeps them."""

    datasets: list[DatasetRows]
    lengths: list[int]  # token length of every tokenized row kept, in LLaMA-Factory's merge order
    scale: float  # rows planned for / rows tokenized (1.0 unless sampled or extrapolated)

    @classmethod
    def of(cls, datasets: list[DatasetRows], per_dataset: list[list[int]], scale: float) -> Tokenized:
        """The datasets with their planned lengths, each dataset's tokens per epoch counted."""
        counted = [replace(d, tokens_per_epoch=round(sum(planned) * scale)) for d, planned in zip(datasets, per_dataset)]
        return cls(counted, [n for planned in per_dataset for n in planned], scale)


PLANNED_LENGTHS_CAP = 100_000  # row lengths packed per dataset when extrapolating; the rest is scaled


def dataset_lengths(settings: TrainSettings, name: str, tokenizer, scratch: str, use_cache: bool, **options):
    """One dataset's token lengths as the recipe's template and thinking mode encode it (caretune.prep.lengths,
    cached); `options` are turn_lengths' own."""
    from caretune.prep.lengths import turn_lengths

    return turn_lengths(
        name,
        settings.dataset_dir,
        tokenizer,
        scratch,
        template=settings.template,
        enable_thinking=settings.enable_thinking,
        use_cache=use_cache,
        **options,
    )


def tokenize(
    settings: TrainSettings,
    recipe_path: str,
    sample: int | None,
    rows_override: dict[str, int],
    use_cache: bool = True,
    length_profiles: dict[str, str] | None = None,
) -> Tokenized:
    """Every dataset of the recipe tokenized (or sampled) as LLaMA-Factory's preprocessing keeps it. A dataset
    planned for more rows than were tokenized has its kept lengths resampled (seeded, with replacement) to the
    planned count, at most PLANNED_LENGTHS_CAP, so its packs fill as the full data's would. A dataset named in
    `length_profiles` takes its lengths from that profile (caretune.prep.profiles) instead."""
    from caretune.prep.lengths import TokenizerSource, dataset_bytes, tokenizer_processes
    from caretune.prep.profiles import ProfileError, load_profile, sample_lengths
    from caretune.prep.tokenizer import TokenizerError

    length_profiles = length_profiles or {}
    tokenizer = TokenizerSource(settings.model)
    cutoff = settings.packed_cutoff if settings.packing else settings.cutoff_len
    datasets, pools = [], []
    rng = random.Random(settings.seed)
    with tempfile.TemporaryDirectory() as scratch:
        for name in settings.datasets:
            profile = length_profiles.get(name)
            processes = tokenizer_processes(settings.preprocessing_num_workers, dataset_bytes(settings.dataset_dir, name))
            try:
                data = dataset_lengths(
                    settings,
                    name,
                    tokenizer,
                    scratch,
                    use_cache,
                    mask_history=settings.mask_history,
                    sample=1 if profile else sample,  # a profile needs only the row count
                    seed=settings.seed,
                    num_proc=processes,
                )
                kept = data.lengths(cutoff, settings.mask_history, settings.preserve_thinking)
                quantiles = load_profile(profile) if profile else None
            except TokenizerError as err:
                raise PlanError(str(err)) from None
            except ProfileError as err:
                raise PlanError(f"--lengths {name}={profile}: {err}") from None
            except Exception as err:  # LLaMA-Factory's own error, with the dataset named
                raise PlanError(
                    f"{settings.dataset_dir}/{DATASET_INFO}: {name}: {type(err).__name__}: {str(err).splitlines()[0]}"
                ) from None
            rows = rows_override.get(name, data.rows)
            if quantiles:
                pool = [min(n, cutoff) for n in sample_lengths(quantiles, min(rows, PLANNED_LENGTHS_CAP), settings.seed)]
                datasets.append(DatasetRows(name, rows, 0, rows, 0, f"profile {profile}"))
            else:
                pool = kept
                rows_kept = round(len(kept) * rows / data.tokenized) if data.tokenized else 0
                datasets.append(DatasetRows(name, rows, data.tokenized, rows_kept, 0, "tokenized"))
            pools.append(pool)
    if not any(pools):
        raise PlanError(f"{recipe_path}: its datasets have no rows LLaMA-Factory keeps")
    if settings.mix_strategy.startswith("interleave") and len(datasets) > 1:
        return mixed(datasets, pools, settings, rng)
    return epoch(datasets, pools, [d.rows_kept for d in datasets], rng)


def epoch(datasets: list[DatasetRows], pools: list[list[int]], rows: list[int], rng: random.Random, **fields) -> Tokenized:
    """An epoch's row lengths, each dataset drawn at one common rate from its pool (its kept lengths, or a profile's),
    so that every dataset weighs by the `rows` it contributes: all of them when they fit in PLANNED_LENGTHS_CAP per
    dataset on average, else a seeded sample with replacement, the plan scaled back up. A pool already of its size
    is taken as it is."""
    rate = min(1.0, PLANNED_LENGTHS_CAP * len(datasets) / max(sum(rows), 1))
    picks, planned = [], []
    for dataset, pool, count in zip(datasets, pools, rows):
        wanted = round(count * rate)
        pick = pool if wanted == len(pool) else (rng.choices(pool, k=max(1, wanted)) if pool and count else [])
        source = dataset.lengths_from
        if source == "tokenized" and pick is not pool:
            source = f"resampled from {dataset.tokenized} tokenized rows ({len(pool)} kept)"
        picks.append(pick)
        planned.append(
            replace(dataset, lengths=len(pick), lengths_from=source, **{k: v[len(picks) - 1] for k, v in fields.items()})
        )
    return Tokenized.of(planned, picks, sum(rows) / sum(map(len, picks)))


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


def mixed(datasets: list[DatasetRows], pools: list[list[int]], settings: TrainSettings, rng: random.Random) -> Tokenized:
    """The epoch an interleave strategy makes of the datasets: the rows LLaMA-Factory's own seeded draw takes of each
    (`merge_dataset` on index-only datasets of the same sizes), each drawn from its pool."""
    # LLaMA-Factory interleaves the rows as loaded; preprocessing then drops the invalid ones of each set
    try:
        loaded = lf.interleaved_rows([d.rows for d in datasets], settings.mix_strategy, settings.mix, settings.seed)
    except ValueError as err:  # what LLaMA-Factory's training would fail on too
        raise PlanError(f"mix_strategy {settings.mix_strategy}: {err}") from None
    draws = [round(n * d.rows_kept / d.rows) if d.rows else 0 for n, d in zip(loaded, datasets)]
    return epoch(datasets, pools, draws, rng, mixed_rows=draws)


@dataclass(frozen=True)
class Batching:
    """One epoch of the tokenized rows as the GPUs receive them."""

    items: int  # rows, or packs
    micro_batches: int
    processed: int  # tokens the GPUs compute, padding included
    peak_tokens: int  # tokens of the largest possible micro-batch
    pack_fill: float | None  # real tokens / pack capacity


def replay(settings: TrainSettings, lengths: list[int], attention: str) -> Batching:
    """Packing and padding as LLaMA-Factory's preprocessing and collator do them."""
    if not settings.packing:
        batches, processed = micro_batch_tokens(lengths, settings.micro_batch, settings.seed, None)
        return Batching(len(lengths), batches, processed, settings.micro_batch * estimate.padded_length(max(lengths)), None)
    capacity = settings.packed_cutoff
    packs = pack(lengths, capacity, settings.preprocessing_batch_size, settings.preprocessing_num_workers)
    fill = sum(packs) / (len(packs) * capacity)
    if settings.neat_packing and attention == "fa2":  # LLaMA-Factory strips the padding of one-pack batches
        return Batching(len(packs), math.ceil(len(packs) / settings.micro_batch), sum(packs), settings.micro_batch * capacity, fill)
    padded = estimate.padded_length(settings.cutoff_len)
    batches, processed = micro_batch_tokens(packs, settings.micro_batch, settings.seed, padded)
    return Batching(len(packs), batches, processed, settings.micro_batch * padded, fill)


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

    memory_kwargs = {
        "gpus": gpus,
        "lora_rank": settings.lora_rank,
        "zero_stage": settings.zero_stage,
        "offload": settings.offload,
        "fused_cross_entropy": settings.liger,
    }
    memory = estimate.memory_breakdown(
        arch, micro_batch_tokens=epoch.peak_tokens, activations=settings.activations, **memory_kwargs
    )
    limit = int(gpu.memory_gib * estimate.GIB * estimate.MEMORY_HEADROOM)
    max_micro_batch = largest_micro_batch(
        arch, epoch.peak_tokens // settings.micro_batch, limit, {**memory_kwargs, "activations": settings.activations}
    )
    variants = memory_variants(arch, epoch.peak_tokens // settings.micro_batch, settings.micro_batch, limit, memory_kwargs)

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
