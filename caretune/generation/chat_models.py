"""LLaMA-Factory's ChatModel over a recipe's model and adapter, as a user sees its answers or as generated
(caretune.generation.think_blocks says which path takes which), and greedy answers to many conversations at once."""

from __future__ import annotations

import dataclasses
import importlib.util

from caretune.basics.errors import UserError
from caretune.generation.think_blocks import ThinkFilter, strip_think
from caretune.recipe import Recipe
from caretune.training.recipe_checks import check_model_paths

# The keys that build the model (the rest of a predict or training recipe is not the ChatModel's)
CHAT_KEYS = (
    "model_name_or_path",
    "adapter_name_or_path",
    "finetuning_type",
    "template",
    "enable_thinking",
    "trust_remote_code",
    "default_system",
)


def chat_model(args: dict, *, as_shown: bool, backend: str | None = None):
    """A ChatModel built from `args` (on `backend`, huggingface or vllm, when given): with `as_shown` its answers
    and streams never contain `<think>` blocks (chat, the API); without, they come as generated (evaluation)."""
    from caretune import lf

    if backend is not None:
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise UserError("--backend vllm needs vLLM (pip install vllm, on a GPU machine)")
        args = {**{key: args[key] for key in CHAT_KEYS if key in args}, "infer_backend": backend}
    if not as_shown:
        return lf.chat_model_class()(args)

    class ThinkFreeChatModel(lf.chat_model_class()):
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
            lf.join_generation_threads()  # the stream ended; its generate call may not have returned yet

    return ThinkFreeChatModel(args)


def greedy_answers(model, conversations: list[tuple[list[dict], str | None]], max_new_tokens: int) -> list[str]:
    """Greedy answers of a ChatModel to each (messages, system), all at once (vLLM batches them)."""
    from caretune.lf import chat_all

    return chat_all(model, conversations, do_sample=False, max_new_tokens=max_new_tokens)


def generate(recipe: Recipe, conversations: list[tuple[list[dict], str | None]], backend: str = "huggingface") -> list[str]:
    """Greedy answers of a recipe's model (its adapter included) to each (messages, system), as generated (for
    evaluation); system None is the recipe's default_system."""
    check_model_paths(recipe.path, recipe.args)
    model = chat_model(recipe.args, as_shown=False, backend=backend)
    return greedy_answers(model, conversations, int(recipe.args.get("max_new_tokens", 1024)))
