"""Export: the merged model matches base + adapter, and its template defaults to non-thinking."""

import pytest
import yaml

from caretune.basics.errors import UserError
from caretune.serving.export import (
    NON_THINKING_BY_DEFAULT,
    THINKS_BY_DEFAULT,
    non_thinking_modelfile,
    non_thinking_template,
)
from caretune.thinking import EMPTY_THINK
from tests.helpers import ROOT, run_caretune


def test_template_switch_is_rewritten_once():
    template = "x" + THINKS_BY_DEFAULT + "y"
    fixed = non_thinking_template(template)
    assert fixed == "x" + NON_THINKING_BY_DEFAULT + "y" and non_thinking_template(fixed) == fixed
    with pytest.raises(UserError, match="not Qwen3's"):
        non_thinking_template("{{ messages }}")


def test_modelfile_gets_the_empty_think_block_and_a_medical_system():
    modelfile = (
        'TEMPLATE """{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '<|im_start|>assistant\n{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"""\n'
    )
    fixed = non_thinking_modelfile(modelfile)
    assert "<|im_start|>assistant\n{{ if $last }}" + EMPTY_THINK + "{{ end }}{{ else if" in fixed  # the last turn only
    assert "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}" in fixed
    assert 'SYSTEM """' in fixed and "医生" in fixed
    assert non_thinking_modelfile(fixed) == fixed
    with pytest.raises(UserError, match="not LLaMA-Factory's Qwen3 one"):
        non_thinking_modelfile('TEMPLATE """{{ .Prompt }}"""\n')


@pytest.mark.lf
@pytest.mark.slow
def test_export_merges_and_defaults_to_non_thinking(tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from caretune.training.tiny_model import build_tiny_model

    base_dir = build_tiny_model(tmp_path / "tiny")
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
    adapted.save_pretrained(tmp_path / "adapter")

    args = yaml.safe_load((ROOT / "recipes/tiny-qwen3/export.yaml").read_text(encoding="utf-8"))
    args.update(
        model_name_or_path=str(base_dir), adapter_name_or_path=str(tmp_path / "adapter"), export_dir=str(tmp_path / "merged")
    )
    recipe = tmp_path / "export.yaml"
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    done = run_caretune(tmp_path, "export", recipe)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    messages = [{"role": "user", "content": "最近总是头疼，怎么办？"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    thinking = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=True)
    assert thinking.endswith("<|im_start|>assistant\n")
    history = [*messages, {"role": "assistant", "content": "多休息。"}, {"role": "user", "content": "还是疼"}]
    served = tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
    assert served.count(EMPTY_THINK) == 1 and served.endswith("还是疼<|im_end|>\n<|im_start|>assistant\n" + EMPTY_THINK)
    modelfile = (tmp_path / "merged" / "Modelfile").read_text(encoding="utf-8")
    assert "{{ if $last }}" + EMPTY_THINK + "{{ end }}" in modelfile and "医生" in modelfile

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        merged_logits, reference_logits = merged(ids).logits, reference(ids).logits
        base_logits = plain(ids).logits
    assert torch.allclose(merged_logits, reference_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(base_logits, reference_logits, atol=1e-3)  # the adapter does change the model
