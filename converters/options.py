"""A conversion's settings: how it cleans and lays out rows (Options: small and picklable, so worker processes get a
copy), how many rows it holds out (HeldOut) and how it runs (RunControls)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from converters.care import (
    APPEND,
)
from converters.choices import FILTER_REASONS, SYSTEM_LAYOUT
from converters.turns import TokenCounter


@dataclass(frozen=True)
class Options:
    """How rows are cleaned and laid out; small and picklable so worker processes get a copy."""

    scrub_pii: bool = True
    filters: frozenset[str] = frozenset(FILTER_REASONS)  # the quality filters switched on
    strip_wrappers: bool = True  # remove <s>问：…答：</s> prompt markers from questions
    care_reminder: str = APPEND  # append | drop | off (converters/care.py)
    layout: str = SYSTEM_LAYOUT  # system | walkthrough (ChatMed; HuatuoGPT2 rows always carry `system`)
    train_answers: str | None = None  # all | last (converters/turns.py); None: the source's TRAIN_ANSWERS
    cutoff_len: int | None = None  # fit training rows to this many tokens (converters/turns.py); None: no fitting
    count: TokenCounter | None = field(default=None, compare=False)  # token counts for rows that may not fit


@dataclass(frozen=True)
class HeldOut:
    """How many rows a conversion holds out for evaluation: `size`, at most `max_fraction` of the rows kept."""

    size: int
    max_fraction: float

    def as_report(self) -> dict:
        return {"requested": self.size, "max_fraction": self.max_fraction}


@dataclass(frozen=True)
class RunControls:
    """How a conversion runs: its progress bar (None: on a terminal), worker processes (None: by the input's size),
    how long it waits for another conversion's lock (None: until it ends) and where its notes go."""

    progress: bool | None = None
    workers: int | None = None
    lock_timeout: float | None = None
    log: Callable[[str], None] | None = None
