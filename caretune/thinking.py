"""Qwen3's thinking mode, decided once for training, evaluation, judging and serving.

Qwen3-8B is a hybrid model: it thinks unless its prompt ends in the empty think block, which is how Qwen3's own
chat template says `enable_thinking=False`. caretune trains and serves every hybrid Qwen3 in non-thinking mode
with one prompt:

- LLaMA-Factory's reasoning template `qwen3` with `enable_thinking: false` puts the empty think block after the
  last `<|im_start|>assistant\\n` of every prompt, with no loss on it, in training and at inference.
- History: a multi-turn row is trained on its last answer (`mask_history: true`), so earlier answers are rendered
  as Qwen3's own template renders history (no think block). Every served prompt, from chat, the API, predict,
  vLLM or Ollama on the exported model, is then a prompt training saw.
- Models that never think (Qwen3-*-Instruct-2507, for one) keep LLaMA-Factory's `_nothink` templates.

LLaMA-Factory warns "please add `_nothink` suffix if the model is not a reasoning model" whenever the `qwen3`
template is used: Qwen3-8B is a reasoning model, so that warning does not apply here.
"""

from __future__ import annotations

import json
from pathlib import Path

REASONING_TEMPLATE = "qwen3"  # with enable_thinking: false, the empty think block in every prompt
NON_THINKING_TEMPLATE = "qwen3_nothink"  # for models that never think: no think block at all
EMPTY_THINK = "<think>\n\n</think>\n\n"
REASONING_TEMPLATE_WARNING = "please add `_nothink` suffix"  # LLaMA-Factory's warning; caretune's processes drop it
_NEVER_THINKS = ("2507", "instruct", "coder", "-vl", "omni")  # Qwen3 names that are not hybrid thinkers


def _local_chat_template(model: str) -> str | None:
    """The chat template text of a local model folder, if it has one."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except ValueError:
            return None
        return template if isinstance(template, str) else None
    return None


def is_hybrid(model: str) -> bool:
    """Whether a model thinks unless told not to: a local folder by its chat template's `enable_thinking`
    switch, a hub name by Qwen3's naming (Qwen/Qwen3-8B yes; Qwen3-*-Instruct-2507, Coder, VL, Omni no)."""
    template = _local_chat_template(model)
    if template is not None:
        return "enable_thinking" in template
    name = Path(str(model).rstrip("/")).name.lower()
    if any(mark in name for mark in _NEVER_THINKS):
        return False
    return name.startswith("qwen3-") or name == "tiny-qwen3"


def template_for(model: str) -> str | None:
    """LLaMA-Factory's template for a Qwen3 model (None when the model is not Qwen3: the user names it)."""
    if is_hybrid(model):
        return REASONING_TEMPLATE
    return NON_THINKING_TEMPLATE if "qwen3" in str(model).lower() else None


def thinking_problems(args: dict) -> list[str]:
    """Why a recipe would put a hybrid Qwen3 into thinking mode (empty when it would not)."""
    model = str(args.get("model_name_or_path") or "")
    if not model or not is_hybrid(model):
        return []
    template = args.get("template")
    if template is not None and str(template).endswith("_nothink"):
        return [
            f"template {template} never adds the empty think block, so hybrid {model} thinks at inference: "
            f"use template: {REASONING_TEMPLATE} with enable_thinking: false"
        ]
    if template == REASONING_TEMPLATE and args.get("enable_thinking", True) is not False:
        return [f"template {REASONING_TEMPLATE} without enable_thinking: false puts hybrid {model} into thinking mode"]
    return []


def history_problem(args: dict) -> str | None:
    """Why a training recipe's multi-turn prompts would differ from served ones (None when they would not)."""
    supervised = args.get("stage", "sft") == "sft"  # preference stages encode the prompt as served (encode_oneturn)
    if supervised and args.get("do_train") and args.get("template") == REASONING_TEMPLATE and args.get("enable_thinking") is False:
        if not args.get("mask_history"):
            return (
                "mask_history is not true: LLaMA-Factory would put the empty think block before every earlier answer "
                "of a multi-turn row, which no served prompt has (Qwen3's template renders history without it)"
            )
    return None
