"""What `caretune bench` measures (BenchSettings): light, so the command line reads its options' defaults from it
without importing the bench."""

from __future__ import annotations

from dataclasses import dataclass

from caretune.constants import DEFAULT_LENGTH_PROFILE


@dataclass(frozen=True)
class BenchSettings:
    """What `caretune bench` measures; each field is the command's option of the same name, and its default here is
    the option's. None picks by device: Qwen3-8B, 24 rows, 2048 tokens on a GPU; the tiny model, 4 rows, 512 on CPU."""

    model: str | None = None
    variants: tuple[str, ...] = ()  # NAME or NAME=SECONDS; none: the base variants
    steps: int = 10  # timed steps per variant
    warmup: int = 3  # untimed steps first
    micro_batch: int | None = None
    pack_batch: int = 1
    cutoff_len: int | None = None
    profile: str = DEFAULT_LENGTH_PROFILE
    time_budget: float | None = None
