"""The thinking policy's model rules: which models are hybrid thinkers, and which template each gets."""

import json

import pytest

from caretune.thinking import NON_THINKING_TEMPLATE, REASONING_TEMPLATE, is_hybrid, template_for, thinking_problems


@pytest.mark.parametrize(
    "model, hybrid",
    [
        ("Qwen/Qwen3-8B", True),
        ("Qwen/Qwen3-0.6B", True),
        ("Qwen/Qwen3-30B-A3B", True),
        ("Qwen/Qwen3-4B-Instruct-2507", False),
        ("Qwen/Qwen3-30B-A3B-Thinking-2507", False),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", False),
        ("meta-llama/Llama-3.1-8B-Instruct", False),
    ],
)
def test_hub_names(model, hybrid):
    assert is_hybrid(model) is hybrid


def test_a_local_folder_is_judged_by_its_chat_template(tmp_path):
    hybrid, plain = tmp_path / "qwen-copy", tmp_path / "Qwen3-8B-local"
    hybrid.mkdir()
    plain.mkdir()
    (hybrid / "chat_template.jinja").write_text("{%- if enable_thinking is defined %}{% endif %}", encoding="utf-8")
    (plain / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}), encoding="utf-8")
    assert is_hybrid(str(hybrid)) and not is_hybrid(str(plain))  # the name says Qwen3-8B, the template does not switch


def test_templates_by_model():
    assert template_for("Qwen/Qwen3-14B") == REASONING_TEMPLATE
    assert template_for("Qwen/Qwen3-4B-Instruct-2507") == NON_THINKING_TEMPLATE
    assert template_for("meta-llama/Llama-3.1-8B-Instruct") is None


def test_problems():
    base = {"model_name_or_path": "Qwen/Qwen3-8B"}
    assert thinking_problems({**base, "template": "qwen3", "enable_thinking": False}) == []
    assert "thinks at inference" in thinking_problems({**base, "template": "qwen3_nothink"})[0]
    assert "thinking mode" in thinking_problems({**base, "template": "qwen3"})[0]  # LLaMA-Factory's default is true
    assert thinking_problems({"model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507", "template": "qwen3_nothink"}) == []
