"""One-shot chat through LLaMA-Factory's ChatModel with a recipe's settings; `<think>` never shown."""

from __future__ import annotations

import re

from caretune.preflight import load_recipe

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_THINK_TAG = re.compile(r"</?think>")


def strip_think(text: str) -> str:
    """Remove `<think>…</think>` blocks and stray think tags from a model answer."""
    return _THINK_TAG.sub("", _THINK_BLOCK.sub("", text)).strip()


def answer(recipe: str, query: str, system: str | None = None) -> str:
    """The model's answer to `query` under the recipe's (or the given) system prompt."""
    from llamafactory.chat import ChatModel

    args = load_recipe(recipe)
    chat_model = ChatModel(args)
    responses = chat_model.chat([{"role": "user", "content": query}], system=system or args.get("default_system"))
    return strip_think(responses[0].response_text)
