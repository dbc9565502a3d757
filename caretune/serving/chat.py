"""`caretune chat`: a conversation (interactive or one question) with a recipe's model, `<think>` blocks never
shown (caretune.generation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from caretune.generation.chat_models import chat_model
from caretune.recipe import load_recipe
from caretune.training.recipe_checks import check_model_paths


class ChatSession:
    """A conversation with a recipe's model: the history kept between questions, answers streamed, `<think>`
    blocks never shown. `caretune chat` uses it both interactively and for one `--query`."""

    def __init__(self, recipe: str, system: str | None = None) -> None:
        args = load_recipe(recipe)
        check_model_paths(Path(recipe), args)
        self.model = chat_model(args, as_shown=True)
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
