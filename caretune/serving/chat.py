"""Chat through LLaMA-Factory with `<think>` blocks never shown: a conversation (interactive or one question),
and a ChatModel whose answers and token streams are filtered."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from caretune.recipe import load_recipe
from caretune.training.preflight import check_model_paths

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


class ChatSession:
    """A conversation with a recipe's model: the history kept between questions, answers streamed, `<think>`
    blocks never shown. `caretune chat` uses it both interactively and for one `--query`."""

    def __init__(self, recipe: str, system: str | None = None) -> None:
        args = load_recipe(recipe)
        check_model_paths(Path(recipe), args)
        self.model = think_free_chat_model(args)
        self.system = system or args.get("default_system")
        self.history: list[dict[str, str]] = []

    def stream(self, query: str) -> Iterator[str]:
        """The answer to `query` in pieces as they are generated; the exchange joins the history at the end."""
        messages = [*self.history, {"role": "user", "content": query}]
        pieces = []
        for piece in self.model.stream_chat(messages, system=self.system):
            pieces.append(piece)
            yield piece
        self.history = [*messages, {"role": "assistant", "content": "".join(pieces).strip()}]

    def clear(self) -> None:
        """Forget the conversation so far."""
        self.history = []


def converse(session: ChatSession, lines: Iterable[str], write: Callable[[str], None]) -> None:
    """An interactive conversation: each line is a question (or 'clear', 'exit'); answers are written as they
    stream."""
    for line in lines:
        question = line.strip()
        if question == "exit":
            return
        if question == "clear":
            session.clear()
            write("(conversation cleared)\n")
        elif question:
            write("Assistant: ")
            for piece in session.stream(question):
                write(piece)
            write("\n")
