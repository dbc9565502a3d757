"""Chat through LLaMA-Factory with `<think>` blocks never shown: one-shot answers, and a ChatModel
whose answers and token streams are filtered (used by the API server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from caretune.preflight import check_model_paths, load_recipe

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


def think_free_chat_model(args: dict):
    """LLaMA-Factory's ChatModel whose answers and streams never contain `<think>` blocks."""
    from caretune.lf import chat_model_class

    class ThinkFreeChatModel(chat_model_class()):
        async def achat(self, *args, **kwargs):
            responses = await super().achat(*args, **kwargs)
            return [dataclasses.replace(r, response_text=strip_think(r.response_text)) for r in responses]

        async def astream_chat(self, *args, **kwargs):
            think_filter = ThinkFilter()
            async for token in super().astream_chat(*args, **kwargs):
                if shown := think_filter.feed(token):
                    yield shown
            if rest := think_filter.flush():
                yield rest

    return ThinkFreeChatModel(args)


def answer(recipe: str, query: str, system: str | None = None) -> str:
    """The model's answer to `query` under the recipe's (or the given) system prompt."""
    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    responses = think_free_chat_model(args).chat([{"role": "user", "content": query}], system=system or args.get("default_system"))
    return responses[0].response_text
