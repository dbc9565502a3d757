"""The LLaMA-Factory seam (caretune/lf.py) against the installed LLaMA-Factory: each function once, so that an
upgrade that moves or changes what caretune relies on fails here, by name."""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from caretune import lf
from tests.helpers import converted_workspace, tiny_recipe

pytestmark = pytest.mark.lf


def test_cli_and_argument_keys():
    command = lf.cli_command()
    assert Path(command[0]).exists()
    keys = lf.known_keys()
    assert {
        "cutoff_len",
        "template",
        "lora_rank",
        "deepspeed",
        "default_system",
        "max_new_tokens",
        "neat_packing",
        "enable_liger_kernel",
        "infer_backend",
        "adapter_name_or_path",
    } <= keys
    types = lf.field_types()
    assert types["learning_rate"] is float and types["per_device_train_batch_size"] is int


def test_quiet_sets_and_restores_the_log_level(monkeypatch):
    monkeypatch.delenv("LLAMAFACTORY_VERBOSITY", raising=False)
    with lf.quiet():
        assert os.environ["LLAMAFACTORY_VERBOSITY"] == "WARN"
    assert "LLAMAFACTORY_VERBOSITY" not in os.environ


def test_chat_template_and_dataset_loading(tmp_path):
    from caretune.constants import CHATMED_DATASET, TEMPLATE
    from caretune.prep.tokenizer import load_qwen3_tokenizer

    tokenizer, _ = load_qwen3_tokenizer()
    template = lf.chat_template(tokenizer, TEMPLATE)
    prompt, answer = template.encode_oneturn(
        tokenizer, [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}], "系统"
    )
    assert 108386 in prompt and answer[-2:] == [151645, 198]  # 你好; <|im_end|> and its newline
    workspace = converted_workspace(tmp_path / "project")
    aligned, data_args, _ = lf.load_aligned(
        CHATMED_DATASET, str(workspace), "Qwen/Qwen3-8B", str(tmp_path / "scratch"), template=TEMPLATE
    )
    assert len(aligned) > 0 and {"_prompt", "_response", "_system"} <= set(aligned.column_names)
    assert aligned[0]["_system"] and data_args.template == TEMPLATE


@pytest.mark.slow
def test_chat_model_engine_and_scores(tmp_path):
    recipe = tiny_recipe(tmp_path, "chat", max_new_tokens=4)
    import yaml

    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    engine = lf.chat_engine(args)
    assert engine.template.encode_oneturn and engine.tokenizer and engine.model and "do_sample" in engine.generating_args
    chat_model = lf.chat_model_class()(args)
    answers = lf.chat_all(chat_model, [([{"role": "user", "content": "头疼"}], None)] * 2, do_sample=False, max_new_tokens=4)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert "".join(chat_model.stream_chat([{"role": "user", "content": "头疼"}], max_new_tokens=4))
    lf.join_generation_threads()
    assert not [t for t in threading.enumerate() if getattr(getattr(t, "_target", None), "__name__", "") == "generate"]
    from transformers import EvalPrediction

    ids = np.array([engine.tokenizer.encode("多喝水，注意休息")])
    scores = lf.similarity_scorer(engine.tokenizer)(EvalPrediction(ids, ids))
    assert scores["bleu-4"] == pytest.approx(100.0) and "rouge-l" in scores


@pytest.mark.slow  # loads the tiny model twice
def test_llamafactory_checkpoints_unless_told_not_to(tmp_path):
    """What caretune.recipe.checkpointing_problem relies on: `gradient_checkpointing: false` alone leaves the model
    LLaMA-Factory trains checkpointed; `disable_gradient_checkpointing: true` turns it off."""
    import yaml
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    checkpointed = []
    for keys in ({"gradient_checkpointing": False}, {"gradient_checkpointing": False, "disable_gradient_checkpointing": True}):
        recipe = tiny_recipe(tmp_path, "lora_sft", output_dir=str(tmp_path / "out"), **keys)
        model_args, _, _, finetuning_args, _ = get_train_args(yaml.safe_load(recipe.read_text(encoding="utf-8")))
        model = load_model(load_tokenizer(model_args)["tokenizer"], model_args, finetuning_args, is_trainable=True)
        checkpointed.append(model.get_base_model().is_gradient_checkpointing)
    assert checkpointed == [True, False]


@pytest.mark.slow
def test_what_the_patching_seams_rely_on_is_there():
    """run_training, ChoiceScorer and the WebUI functions patch or call these names; the runs themselves are
    in test_bench, test_mcq and test_webui."""
    from llamafactory.data import collator
    from llamafactory.data.template import Template
    from llamafactory.eval.template import get_eval_template
    from llamafactory.extras.constants import DEFAULT_TEMPLATE, SUPPORTED_MODELS, DownloadSource, register_model_group
    from llamafactory.model import loader
    from llamafactory.train.tuner import run_exp
    from llamafactory.webui import common
    from llamafactory.webui.engine import Engine
    from llamafactory.webui.runner import Runner

    assert callable(collator.SFTDataCollatorWith4DAttentionMask.__call__) and hasattr(loader, "AutoModelForCausalLM")
    assert "callbacks" in inspect.signature(run_exp).parameters and callable(Template.encode_oneturn)
    assert "support_set" in inspect.signature(get_eval_template("zh").format_example).parameters
    assert all(
        hasattr(common, name)
        for name in ("DEFAULT_DATA_DIR", "DEFAULT_CACHE_DIR", "DEFAULT_CONFIG_DIR", "save_config", "save_args", "load_config")
    )
    assert inspect.isgeneratorfunction(Engine.resume) and callable(Runner.load_args)
    register_model_group({"caretune-seam-test": {DownloadSource.DEFAULT: "x/y"}})
    assert "caretune-seam-test" in SUPPORTED_MODELS and isinstance(DEFAULT_TEMPLATE, dict)


@pytest.mark.slow  # builds the WebUI's components (gradio): seconds
def test_the_webui_chat_box_starts_without_thinking(tmp_path, monkeypatch):
    """LLaMA-Factory's chat box has "Enable thinking" on; caretune webui turns it off for the hybrid Qwen3 it serves."""
    import gradio as gr
    import llamafactory.webui.common as common
    import llamafactory.webui.components.infer as infer
    from llamafactory.webui.components import create_top
    from llamafactory.webui.engine import Engine

    monkeypatch.chdir(tmp_path)  # the WebUI's engine keeps state in folders of the current directory
    for name in ("DEFAULT_CACHE_DIR", "DEFAULT_CONFIG_DIR"):
        monkeypatch.setattr(common, name, str(tmp_path / name.lower()))

    from caretune.lf import webui_chat_without_thinking

    def chat_box(create):
        engine = Engine()
        with gr.Blocks():
            engine.manager.add_elems("top", create_top())
            return create(engine, visible=False)[2]

    original = infer.create_chat_box
    try:
        assert chat_box(original)["enable_thinking"].value is True  # LLaMA-Factory's default
        webui_chat_without_thinking()
        assert chat_box(infer.create_chat_box)["enable_thinking"].value is False
    finally:
        infer.create_chat_box = original


def test_packing_and_turn_budgets_are_llamafactorys_with_a_guard():
    assert lf.greedy_packs([6, 6, 4, 4], 10) == [10, 10]  # longest that fits, again and again
    assert lf.greedy_packs([1] * 5, 2) == [2, 2, 1]
    with pytest.raises(ValueError, match="a row of 11 tokens does not fit a pack of 10"):
        lf.greedy_packs([3, 11], 10)  # LLaMA-Factory's own loop would never end
    assert lf.infer_seqlen(30, 10, 100) == (30, 10)  # within budget: whole
    assert lf.infer_seqlen(500, 10, 100) == (90, 10)  # a short answer is kept whole, the prompt cut
    assert lf.infer_seqlen(10, 500, 100) == (10, 90)  # a short prompt is kept whole, the answer cut


def test_a_recipe_runs_in_this_process_only_where_llamafactory_cli_would_run_it_in_its_own(monkeypatch):
    for name in ("FORCE_TORCHRUN", "USE_MCA", "USE_V1", "USE_RAY"):
        monkeypatch.delenv(name, raising=False)
    assert lf.runs_in_its_own_process()  # one device (CPU here), no switch: the CLI itself would call run_exp
    for name in ("FORCE_TORCHRUN", "USE_MCA", "USE_V1", "USE_RAY"):
        monkeypatch.setenv(name, "1")
        assert not lf.runs_in_its_own_process(), name  # torchrun, Megatron, the v1 launcher or Ray: the CLI runs it
        monkeypatch.delenv(name)
