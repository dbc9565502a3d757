"""One prompt layout: a ChatMed training row, a held-out row as `predict` feeds it, and a chat/API request
render the same system and user parts through LLaMA-Factory's own qwen3 template (non-thinking)."""

import copy
import tempfile

import pytest
import yaml

from caretune.constants import MEDICAL_SYSTEM_PROMPT
from converters import chatmed
from converters.options import Options
from tests.helpers import CHATMED_SAMPLE, ROOT, convert_into

pytestmark = pytest.mark.lf

IGNORE_INDEX = -100


def _setup(project, layout):
    convert_into(project, chatmed, CHATMED_SAMPLE, eval_size=5, options=Options(layout=layout))


def _recipe(task):
    return yaml.safe_load((ROOT / "recipes" / "qwen3-8b" / f"{task}.yaml").read_text(encoding="utf-8"))


def _preprocessed(name, project, tokenizer, template, *, predict):
    """LLaMA-Factory's SFT preprocessing of one registered dataset: training rows, or held-out rows for predict."""
    from llamafactory.data.loader import _get_preprocessed_dataset

    from caretune.lf import load_aligned

    with tempfile.TemporaryDirectory() as scratch:
        aligned, data_args, training_args = load_aligned(
            name, str(project), "Qwen/Qwen3-8B", scratch, template=template.name, cutoff_len=2048
        )
        training_args.predict_with_generate = predict
        processed = _get_preprocessed_dataset(aligned, data_args, training_args, "sft", template, tokenizer, is_eval=predict)
        return aligned, processed


def _templates():
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    from caretune.prep.tokenizer import offline_tokenizer

    tokenizer = offline_tokenizer()
    train = _recipe("lora_sft")
    predict = _recipe("predict")
    chat = _recipe("chat")
    assert train["template"] == predict["template"] == chat["template"] == "qwen3"
    assert train["enable_thinking"] is predict["enable_thinking"] is chat["enable_thinking"] is False
    # LLaMA-Factory hands out one shared Template object per name and sets default_system on it: copy each
    train_template = copy.deepcopy(
        get_template_and_fix_tokenizer(tokenizer, DataArguments(template=train["template"], enable_thinking=False))
    )
    train_template.name = train["template"]
    train_template.default_system = ""  # as in a fresh training process: qwen3 registers none
    # chat and the API: no system message in the request, so the recipe's default_system applies
    chat_template = copy.deepcopy(
        get_template_and_fix_tokenizer(
            tokenizer, DataArguments(template=chat["template"], enable_thinking=False, default_system=chat["default_system"])
        )
    )
    assert chat["default_system"] == MEDICAL_SYSTEM_PROMPT
    return tokenizer, train_template, chat_template


def _first_training_prompt(project, tokenizer, template):
    """(the first training row as aligned, its prompt's token ids) after LLaMA-Factory's preprocessing."""
    aligned, processed = _preprocessed("multi-med", project, tokenizer, template, predict=False)
    ids, labels = processed[0]["input_ids"], processed[0]["labels"]
    prompt_end = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    return aligned[0], ids[:prompt_end]


def _chat_prompt(tokenizer, chat_template, question):
    """The prompt LLaMA-Factory's chat engines build for one user message (hf_engine pairs it with an empty reply)."""
    prompt_ids, _ = chat_template.encode_oneturn(
        tokenizer, [{"role": "user", "content": question}, {"role": "assistant", "content": ""}], None
    )
    return prompt_ids


@pytest.mark.slow
def test_training_predict_and_chat_render_the_same_prompt(tmp_path):
    _setup(tmp_path, "system")
    tokenizer, train_template, chat_template = _templates()

    row, prompt_ids = _first_training_prompt(tmp_path, tokenizer, train_template)
    question = row["_prompt"][-1]["content"]
    chat_ids = _chat_prompt(tokenizer, chat_template, question)
    assert prompt_ids == chat_ids
    text = tokenizer.decode(chat_ids)
    assert text.startswith(f"<|im_start|>system\n{MEDICAL_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>")

    held_out, processed_eval = _preprocessed("multi-med-eval", tmp_path, tokenizer, train_template, predict=True)
    for row, example in zip(processed_eval, held_out):
        assert row["input_ids"] == _chat_prompt(tokenizer, chat_template, example["_prompt"][-1]["content"])


@pytest.mark.slow
def test_walkthrough_layout_puts_the_prompt_in_the_user_turn(tmp_path):
    _setup(tmp_path, "walkthrough")
    tokenizer, train_template, chat_template = _templates()
    row, prompt_ids = _first_training_prompt(tmp_path, tokenizer, train_template)
    text = tokenizer.decode(prompt_ids)
    assert f"<|im_start|>user\n{MEDICAL_SYSTEM_PROMPT}\n" in text and "<|im_start|>system" not in text
    question = row["_prompt"][-1]["content"].split("\n", 1)[1]
    assert prompt_ids != _chat_prompt(tokenizer, chat_template, question)
