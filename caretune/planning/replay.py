"""The epoch as LLaMA-Factory forms it: each dataset tokenized with the recipe's template (caretune.prep.lengths,
cached), interleaved by LLaMA-Factory's own draw, packed by its greedy knapsack per preprocessing shard and batch, and
padded as its collator pads."""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, replace

from caretune import lf
from caretune.constants import DATASET_INFO
from caretune.planning import estimate
from caretune.planning.recipe_settings import PlanError, TrainSettings

PLANNED_LENGTHS_CAP = 100_000  # row lengths packed per dataset when extrapolating; the rest is scaled


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


def dataset_lengths(settings: TrainSettings, name: str, tokenizer, scratch: str, use_cache: bool, **options):
    """One dataset's token lengths as the recipe's template and thinking mode encode it (caretune.prep.lengths,
    cached); `options` are LengthRequest's own."""
    from caretune.prep.lengths import LengthRequest, turn_lengths

    request = LengthRequest(settings.template, settings.enable_thinking, use_cache=use_cache, **options)
    return turn_lengths(name, settings.dataset_dir, tokenizer, scratch, request)


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
