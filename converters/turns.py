"""Which answers of a conversation train, and on which whole turns: turn expansion and fitting to a cutoff.

The recipes train with `mask_history: true`, so a training row teaches its last answer only, on the prompt chat and
the API render at that point (history without think blocks, the empty think block before the answer). One row per
trained answer therefore trains every answer on its served prompt ("turn expansion"); `TRAIN_LAST` keeps one row
per conversation, its last answer, and leaves earlier answers as context.

With a cutoff, a row longer than it keeps its system prompt and its newest whole turns: older whole turns are
dropped, never part of one, so LLaMA-Factory truncates nothing. An answer whose own question and answer exceed the
cutoff does not train; a conversation whose last answer does not fit is skipped (`TOO_LONG`).

Token counts come from a counter the caller gives (`TurnTokens`); none is needed for a conversation whose UTF-8
bytes are under the cutoff, since a byte-level tokenizer never makes more tokens than bytes.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

TRAIN_ALL, TRAIN_LAST = "all", "last"
TRAIN_POLICIES = (TRAIN_ALL, TRAIN_LAST)
TOO_LONG = "too_long"
# Template tokens around one turn, at most (Qwen3: "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n",
# "<|im_end|>\n"), around the system prompt, and the empty think block before a trained answer: together with the
# text's bytes, an upper bound on a row's tokens.
TURN_OVERHEAD = 16
SYSTEM_OVERHEAD = 8
THINK_OVERHEAD = 8


class TurnTokens(NamedTuple):
    """A conversation's token counts as the chat template encodes it: the system block, each turn (question and
    answer, template tokens included, no think block), and the empty think block before a trained answer."""

    system: int
    turns: list[int]
    think: int


TokenCounter = Callable[[str, list[tuple[str, str]]], TurnTokens]


@dataclass(frozen=True)
class Window:
    """One training row: turns `first`..`last` (0-based, inclusive) of the conversation; it trains turn `last`."""

    first: int
    last: int


@dataclass(frozen=True)
class Plan:
    """How one conversation trains: its rows, and what fitting left out."""

    windows: tuple[Window, ...]
    answers: int  # answers in the conversation
    too_long: int  # answers that do not fit the cutoff even alone, not trained
    turns_dropped: int  # whole old turns left out of fitted rows, over all rows

    @property
    def fitted_rows(self) -> int:
        """Rows that lost old turns to fit the cutoff."""
        return sum(1 for window in self.windows if window.first > 0)

    @property
    def context_only(self) -> int:
        """Answers that fit but do not train (the last-answer policy)."""
        return self.answers - len(self.windows) - self.too_long


def fits_by_bytes(record: bytes, turns: int, cutoff_len: int) -> bool:
    """Whether a conversation whose record encodes to `record` (UTF-8 JSON: its text and more) fits the cutoff whole,
    without counting tokens. Qwen3's tokenizer normalises text to NFC first, which can lengthen text not in NFC
    (U+1D160 is 4 bytes, 6 tokens): such text is counted."""
    if len(record) + _overhead(turns) > cutoff_len:
        return False
    return record.isascii() or unicodedata.is_normalized("NFC", record.decode("utf-8"))


@functools.cache
def unfitted_plan(turns: int, policy: str) -> Plan:
    """The plan of a conversation of `turns` turns that fits whole (one shared object per shape)."""
    targets = range(turns) if policy == TRAIN_ALL else (turns - 1,)
    return Plan(tuple(Window(0, i) for i in targets), turns, 0, 0)


def _byte_bound(system: str, turns: list[tuple[str, str]]) -> int:
    """An upper bound on the tokens of the whole conversation as one row."""
    text_bytes = len(system.encode()) + sum(len(q.encode()) + len(a.encode()) for q, a in turns)
    return text_bytes + _overhead(len(turns))


def _overhead(turns: int) -> int:
    """Template tokens of a row of `turns` turns, at most."""
    return SYSTEM_OVERHEAD + TURN_OVERHEAD * turns + THINK_OVERHEAD


def _nfc(system: str, turns: list[tuple[str, str]]) -> bool:
    return all(unicodedata.is_normalized("NFC", text) for text in (system, *(t for turn in turns for t in turn)))


def plan_rows(system: str, turns: list[tuple[str, str]], policy: str, cutoff_len: int | None, count: TokenCounter | None) -> Plan:
    """The training rows of a conversation under `policy`, each fitted to `cutoff_len` (None: no fitting)."""
    targets = range(len(turns)) if policy == TRAIN_ALL else (len(turns) - 1,)
    if cutoff_len is None or (_byte_bound(system, turns) <= cutoff_len and _nfc(system, turns)):
        return unfitted_plan(len(turns), policy)
    if count is None:
        raise ValueError("a token counter is needed to fit rows longer than the cutoff")
    tokens = count(system, turns)
    windows, too_long, dropped = [], 0, 0
    for i in targets:
        budget = cutoff_len - tokens.system - tokens.think - tokens.turns[i]
        if budget < 0:
            too_long += 1
            continue
        first = i
        while first > 0 and tokens.turns[first - 1] <= budget:
            budget -= tokens.turns[first - 1]
            first -= 1
        windows.append(Window(first, i))
        dropped += first
    return Plan(tuple(windows), len(turns), too_long, dropped)
