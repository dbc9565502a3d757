"""The `<think>` policy, in one place. caretune trains and serves Qwen3 in non-thinking mode (caretune.thinking), and
still: a user never sees a think block (chat and the API pass every answer and stream through ThinkFilter), while
evaluation scores answers as generated, so that a leaked block is counted (has_think), not hidden."""

from __future__ import annotations

import re

OPEN, CLOSE = "<think>", "</think>"


class ThinkFilter:
    """Removes `<think>…</think>` blocks, stray think tags and the whitespace after a block from text
    that arrives in pieces; tags split across pieces are held back until they can be told apart."""

    def __init__(self) -> None:
        self.pending = ""
        self.inside = False
        self.skip_space = False

    def feed(self, piece: str) -> str:
        """Text of `piece` that may be shown now; tags split across pieces are held back."""
        self.pending += piece
        shown = []
        while self.pending:
            if self.inside:
                end = self.pending.find(CLOSE)
                if end == -1:
                    self.pending = self.pending[-(len(CLOSE) - 1) :]  # may hold the start of "</think>"
                    break
                self.pending = self.pending[end + len(CLOSE) :]
                self.inside, self.skip_space = False, True
                continue
            if self.skip_space:
                self.pending = self.pending.lstrip()
                if not self.pending:
                    break
                self.skip_space = False
            starts = [(i, tag) for tag in (OPEN, CLOSE) if (i := self.pending.find(tag)) != -1]
            if starts:
                index, tag = min(starts)
                shown.append(self.pending[:index])
                self.pending = self.pending[index + len(tag) :]
                self.inside = tag == OPEN
                continue
            keep = next(
                (
                    n
                    for n in range(min(len(CLOSE) - 1, len(self.pending)), 0, -1)
                    if OPEN.startswith(self.pending[-n:]) or CLOSE.startswith(self.pending[-n:])
                ),
                0,
            )
            shown.append(self.pending[: len(self.pending) - keep])
            self.pending = self.pending[len(self.pending) - keep :]
            break
        return "".join(shown)

    def flush(self) -> str:
        """What is still held back at the end (never the inside of an unclosed block)."""
        rest = "" if self.inside else self.pending
        self.pending = ""
        return rest


def strip_think(text: str) -> str:
    """Remove `<think>…</think>` blocks and stray think tags from a whole answer."""
    think_filter = ThinkFilter()
    return (think_filter.feed(text) + think_filter.flush()).strip()


_TAG = re.compile(r"</?think>")


def has_think(answer: str) -> bool:
    """Whether an answer contains `<think>` or `</think>`."""
    return bool(_TAG.search(answer))
