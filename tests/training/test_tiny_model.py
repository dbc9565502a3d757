"""The CPU stand-in: a tiny random Qwen3 with the real tokenizer and template."""

import pytest

pytestmark = pytest.mark.lf


@pytest.mark.slow
def test_tiny_model_loads_and_speaks_qwen3(tmp_path, monkeypatch):
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path / "cache"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from caretune.training.tiny_model import TINY_CONFIG, build_tiny_model

    path = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.hidden_size == TINY_CONFIG["hidden_size"] and model.config.vocab_size == 151_936
    assert sum(p.numel() for p in model.parameters()) < 25_000_000
    assert tokenizer.encode("你好", add_special_tokens=False) == [108386]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], add_generation_prompt=True, enable_thinking=False, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    again = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "tiny2"))
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
