"""`caretune export`: merge the LoRA adapter with LLaMA-Factory, then make the exported chat template
default to non-thinking, as training did.

A merged Qwen3 keeps Qwen's chat template, which thinks unless `enable_thinking=False` is passed, so
vLLM/Ollama deployments emit `<think>` blocks. The exported template is changed so that the
generation prompt carries the empty think block unless thinking is asked for explicitly, and the
Ollama Modelfile gets the same block after the last user turn (earlier answers are rendered without it, as
Qwen3's template and training render history: caretune.thinking) and the medical system prompt as its default.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.constants import MEDICAL_SYSTEM_PROMPT
from caretune.lf import cli_command
from caretune.thinking import EMPTY_THINK

THINKS_BY_DEFAULT = "{%- if enable_thinking is defined and enable_thinking is false %}"
NON_THINKING_BY_DEFAULT = "{%- if enable_thinking is not defined or enable_thinking is false %}"
# LLaMA-Factory's Ollama template for qwen3: a user turn ends with the assistant header.
OLLAMA_MESSAGES = "{{ range .Messages }}"
OLLAMA_ASSISTANT_HEADER = "<|im_start|>assistant\n{{ else if"
OLLAMA_MESSAGES_WITH_LAST = "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
OLLAMA_HEADER_WITH_EMPTY_THINK = "<|im_start|>assistant\n{{ if $last }}" + EMPTY_THINK + "{{ end }}{{ else if"


def non_thinking_template(template: str) -> str:
    """Qwen3's chat template with the empty think block emitted unless enable_thinking is true."""
    if NON_THINKING_BY_DEFAULT in template:
        return template
    if THINKS_BY_DEFAULT not in template:
        raise UserError(
            "the exported chat template is not Qwen3's (no enable_thinking switch found); check `template` in the export recipe"
        )
    return template.replace(THINKS_BY_DEFAULT, NON_THINKING_BY_DEFAULT)


def non_thinking_modelfile(modelfile: str) -> str:
    """The Ollama Modelfile with the empty think block after the assistant header of the last user turn only,
    and a medical default system."""
    if OLLAMA_MESSAGES_WITH_LAST not in modelfile:
        if OLLAMA_MESSAGES not in modelfile or OLLAMA_ASSISTANT_HEADER not in modelfile:
            raise UserError("the exported Ollama Modelfile is not LLaMA-Factory's Qwen3 one; check `template` in the export recipe")
        modelfile = modelfile.replace(OLLAMA_MESSAGES, OLLAMA_MESSAGES_WITH_LAST, 1)
        modelfile = modelfile.replace(OLLAMA_ASSISTANT_HEADER, OLLAMA_HEADER_WITH_EMPTY_THINK, 1)
    if "\nSYSTEM " not in modelfile:
        modelfile = modelfile.rstrip("\n") + f'\nSYSTEM """{MEDICAL_SYSTEM_PROMPT}"""\n'
    return modelfile


def fix_export(export_dir: str | Path) -> None:
    """Rewrite the exported chat template (and Modelfile) to default to non-thinking, then verify it."""
    import json

    from transformers import AutoTokenizer

    export_dir = Path(export_dir)
    jinja = export_dir / "chat_template.jinja"
    config_path = export_dir / "tokenizer_config.json"
    if jinja.exists():
        jinja.write_text(non_thinking_template(jinja.read_text(encoding="utf-8")), encoding="utf-8")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("chat_template"), str):
        config["chat_template"] = non_thinking_template(config["chat_template"])
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if not jinja.exists() and "chat_template" not in config:
        raise UserError(f"{export_dir}: no chat template was exported")
    modelfile = export_dir / "Modelfile"
    if modelfile.exists():
        modelfile.write_text(non_thinking_modelfile(modelfile.read_text(encoding="utf-8")), encoding="utf-8")

    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    conversation = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "您好"},
        {"role": "user", "content": "头疼"},
    ]
    prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    if not prompt.endswith("<|im_start|>assistant\n" + EMPTY_THINK) or prompt.count(EMPTY_THINK) != 1:
        raise UserError(f"{export_dir}: the chat template does not render caretune's non-thinking prompt: {prompt[-120:]!r}")


def export(recipe: str) -> Path:
    """Merge with `llamafactory-cli export RECIPE`, then fix the template; return the export folder, where
    caretune_run.json names the training run's manifest (path and SHA-256)."""
    from caretune.recipe import load_recipe
    from caretune.training.recipe_checks import check_model_paths

    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    export_dir = args.get("export_dir")
    if not export_dir:
        raise UserError(f"{recipe}: no export_dir")
    code = subprocess.call([*cli_command(), "export", recipe])
    if code != 0:
        raise UserError(f"llamafactory-cli export exited with code {code}")
    fix_export(export_dir)
    from caretune.basics.files import write_json_atomic
    from caretune.training.runs import trained_by

    write_json_atomic(
        Path(export_dir) / "caretune_run.json", {"recipe": recipe, "trained_by": trained_by(args.get("adapter_name_or_path"))}
    )
    return Path(export_dir)
