"""Token counts for fitting training rows to a cutoff (`caretune convert --cutoff-len`): a conversation encoded by
LLaMA-Factory's own chat template with the Qwen3 tokenizer, as the recipes train it (template `qwen3`, non-thinking).

Loaded on the first row that may not fit (most rows are ruled in by their byte count, converters/turns.py), in
whichever process converts it; pickled without the loaded parts, so conversion workers get a copy."""

from __future__ import annotations

import copy
import functools

from caretune.constants import TEMPLATE
from converters.turns import TurnTokens


@functools.cache
def _loaded(template_name: str) -> tuple:
    """The Qwen3 tokenizer, LLaMA-Factory's template in non-thinking mode, and its empty think block's length; loaded
    once per process."""
    from caretune import lf
    from caretune.prep.tokenizer import offline_tokenizer

    tokenizer = offline_tokenizer()
    # a copy: LLaMA-Factory shares one template object per name and a recipe's keys (default_system) are set on it;
    # training rows get the template's own default system prompt, none for qwen3
    template = copy.deepcopy(lf.chat_template(tokenizer, template_name, enable_thinking=False))
    template.default_system = ""
    think = len(template.get_thought_word_ids(tokenizer)) if hasattr(template, "get_thought_word_ids") else 0
    return tokenizer, template, think


class TemplateTokenCounter:
    """`count(system, turns) -> TurnTokens`: the system block, each turn without its think block, the think block."""

    def __init__(self, template: str = TEMPLATE) -> None:
        self.template_name = template
        self._loaded = None

    def __getstate__(self) -> dict:
        return {"template_name": self.template_name, "_loaded": None}

    def _load(self):
        if self._loaded is None:
            self._loaded = _loaded(self.template_name)
        return self._loaded

    def __call__(self, system: str, turns: list[tuple[str, str]]) -> TurnTokens:
        tokenizer, template, think = self._load()
        messages = [
            {"role": role, "content": text}
            for question, answer in turns
            for role, text in (("user", question), ("assistant", answer))
        ]
        # Every answer a trained answer: each turn's prompt carries the empty think block, which is counted apart.
        with_system = template.encode_multiturn(tokenizer, messages, system or None, None, False)
        bare = template.encode_multiturn(tokenizer, messages[:2], None, None, False)
        lengths = [len(source) + len(target) - think for source, target in with_system]
        system_tokens = len(with_system[0][0]) - len(bare[0][0])
        lengths[0] -= system_tokens
        return TurnTokens(system=system_tokens, turns=lengths, think=think)
