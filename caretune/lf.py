"""The one seam to LLaMA-Factory: every contact with its Python internals (private names, patched classes,
argument dataclasses, templates, engines, WebUI state) is a function here, and a contract test
(tests/test_lf.py) runs each against the installed version, so an upgrade breaks in one place.
Other modules use LLaMA-Factory only through these functions or its CLI."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# ---------------------------------------------------------------- CLI and arguments


def cli_command() -> list[str]:
    """`llamafactory-cli` of this environment (beside this Python), or its module as a fallback."""
    cli = Path(sys.executable).with_name("llamafactory-cli")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "llamafactory.cli"]


def argument_classes() -> tuple:
    """The dataclasses behind every key of LLaMA-Factory's train and infer parsers."""
    with quiet():  # when this is LLaMA-Factory's first import, it logs warnings only
        from llamafactory.hparams import (
            DataArguments,
            EvaluationArguments,
            FinetuningArguments,
            GeneratingArguments,
            ModelArguments,
            RayArguments,
            TrainingArguments,
        )

    return (
        ModelArguments,
        DataArguments,
        TrainingArguments,
        FinetuningArguments,
        GeneratingArguments,
        EvaluationArguments,
        RayArguments,
    )


def known_keys() -> set[str]:
    """Every key LLaMA-Factory's train/infer parsers accept."""
    from dataclasses import fields

    return {f.name for cls in argument_classes() for f in fields(cls)}


def field_types() -> dict[str, object]:
    """The declared type of every key (first declaration wins)."""
    import typing

    types: dict[str, object] = {}
    for cls in argument_classes():
        for key, hint in typing.get_type_hints(cls).items():
            types.setdefault(key, hint)
    return types


def field_defaults() -> dict[str, object]:
    """The default of every key of LLaMA-Factory's and transformers' argument dataclasses that has one (first
    declaration wins): what a recipe that leaves the key out gets."""
    from dataclasses import MISSING, fields

    defaults: dict[str, object] = {}
    for cls in argument_classes():
        for field in fields(cls):
            if field.default is not MISSING:
                defaults.setdefault(field.name, field.default)
            elif field.default_factory is not MISSING:
                defaults.setdefault(field.name, field.default_factory())
    return defaults


@contextlib.contextmanager
def _without_concat_advice() -> Iterator[None]:
    """LLaMA-Factory advises concat for every non-streaming interleave; caretune's mixes are interleaved on purpose."""
    import logging

    logger = logging.getLogger("llamafactory.data.data_utils")
    advice = logging.Filter()
    advice.filter = lambda record: "We recommend using `mix_strategy=concat`" not in str(record.msg)
    logger.addFilter(advice)
    try:
        yield
    finally:
        logger.removeFilter(advice)


def effective_cutoff_len(recipe: dict) -> int:
    """The cutoff LLaMA-Factory applies for a recipe: its cutoff_len, less the token it keeps back when packing."""
    from llamafactory.hparams import DataArguments

    keys = ("cutoff_len", "packing", "neat_packing")
    return DataArguments(**{key: recipe[key] for key in keys if recipe.get(key) is not None}).cutoff_len


def interleaved_rows(rows: list[int], mix_strategy: str, probs: list[float] | None, seed: int) -> list[int]:
    """Rows an epoch draws from each dataset under an interleave strategy, as LLaMA-Factory's own `merge_dataset`
    draws them with the training seed (run on index-only datasets of the same sizes)."""
    import numpy as np
    from datasets import Dataset
    from llamafactory.data.data_utils import merge_dataset
    from llamafactory.hparams import DataArguments

    with quiet(), _without_concat_advice():
        parts = [Dataset.from_dict({"source": np.full(count, index, dtype=np.int32)}) for index, count in enumerate(rows)]
        args = DataArguments(mix_strategy=mix_strategy, interleave_probs=",".join(map(str, probs)) if probs else None)
        merged = merge_dataset(parts, args, seed=seed)
    drawn = np.bincount(merged.with_format("numpy")["source"], minlength=len(rows)) if len(merged) else np.zeros(len(rows))
    return [int(count) for count in drawn]


def infer_seqlen(source: int, target: int, budget: int) -> tuple[int, int]:
    """Tokens of one turn's prompt and answer kept within `budget`: LLaMA-Factory's own `infer_seqlen`."""
    from llamafactory.data.processor.processor_utils import infer_seqlen as llamafactory_infer_seqlen

    return llamafactory_infer_seqlen(source, target, budget)


def greedy_packs(lengths: list[int], capacity: int) -> list[int]:
    """Real tokens of each pack LLaMA-Factory's `greedy_knapsack` forms from `lengths`; a row longer than the
    capacity is refused first (LLaMA-Factory's loop never ends on one)."""
    from llamafactory.data.processor.processor_utils import greedy_knapsack

    if lengths and max(lengths) > capacity:
        raise ValueError(f"a row of {max(lengths)} tokens does not fit a pack of {capacity}")
    return [sum(knapsack) for knapsack in greedy_knapsack(list(lengths), capacity)]


def generating_defaults() -> dict:
    """LLaMA-Factory's default for every generation key (what a recipe that leaves a key out gets)."""
    from dataclasses import MISSING, fields

    from llamafactory.hparams import GeneratingArguments

    return {f.name: f.default for f in fields(GeneratingArguments) if f.default is not MISSING}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """LLaMA-Factory reads its log level when first imported: warnings only, without leaking the setting."""
    previous = os.environ.get("LLAMAFACTORY_VERBOSITY")
    os.environ["LLAMAFACTORY_VERBOSITY"] = previous or "WARN"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["LLAMAFACTORY_VERBOSITY"]


def settle_logging() -> None:
    """LLaMA-Factory's log handler writes to whatever stdout was when it was set up: set it up on the real stdout
    (so a later redirected or closed stdout cannot break its warnings), and drop its suggestion to add the
    `_nothink` suffix, which does not apply to a hybrid Qwen3 (caretune.thinking)."""
    import logging

    from caretune.thinking import REASONING_TEMPLATE_WARNING

    with quiet():  # the handler takes its level when it is set up: warnings only, as on any first import here
        from llamafactory.extras.logging import get_logger

        get_logger("llamafactory")  # sets the library's handler up now, on the real stdout
    for handler in logging.getLogger("llamafactory").handlers:
        if not any(getattr(f, "caretune", False) for f in handler.filters):
            drop = logging.Filter()
            drop.filter = lambda record: REASONING_TEMPLATE_WARNING not in str(record.msg)
            drop.caretune = True
            handler.addFilter(drop)


# ---------------------------------------------------------------- data


def chat_template(tokenizer, template, **data_kwargs):
    """LLaMA-Factory's chat template object for a template name (with DataArguments keys such as
    enable_thinking) or a DataArguments (it also fixes the tokenizer's special tokens, as training does)."""
    settle_logging()
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    data_args = DataArguments(template=template, **data_kwargs) if isinstance(template, str) else template
    return get_template_and_fix_tokenizer(tokenizer, data_args)


def dataset_attr(name: str, dataset_dir: str):
    """LLaMA-Factory's reading of one registry entry (formatting, ranking, columns)."""
    with quiet():
        from llamafactory.data.parser import get_dataset_list

    return get_dataset_list([name], dataset_dir)[0]


def load_aligned(name: str, dataset_dir: str, model_name_or_path: str, scratch: str, **data_kwargs):
    """One registered dataset loaded and aligned by LLaMA-Factory's own code, as training sees it.

    Returns `(aligned dataset, data_args, training_args)`; `data_kwargs` go to its DataArguments.
    """
    with quiet():  # when this is LLaMA-Factory's first import, it logs warnings only
        from llamafactory.data.loader import _load_single_dataset
        from llamafactory.data.parser import get_dataset_list
        from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    data_args = DataArguments(dataset=name, dataset_dir=dataset_dir, **data_kwargs)
    model_args = ModelArguments(model_name_or_path=model_name_or_path)
    training_args = Seq2SeqTrainingArguments(output_dir=scratch, report_to=[])
    attr = get_dataset_list([name], dataset_dir)[0]
    return _load_single_dataset(attr, model_args, data_args, training_args), data_args, training_args


# ---------------------------------------------------------------- inference and evaluation


def chat_model_class():
    """LLaMA-Factory's ChatModel (caretune.generation.chat_models builds on it)."""
    settle_logging()
    from llamafactory.chat import ChatModel

    return ChatModel


def join_generation_threads(timeout_s: float = 30.0) -> None:
    """Wait for the daemon threads in which LLaMA-Factory's Hugging Face engine streams (`model.generate`) to end. One
    can still be inside generate after its stream has ended, and an interpreter that exits then may abort in native
    code ("terminate called without an active exception", seen once at the end of `caretune chat --query`)."""
    import threading

    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)  # Thread keeps its target until run() returns
        if thread.daemon and thread is not threading.current_thread() and getattr(target, "__name__", "") == "generate":
            thread.join(timeout_s)


def chat_engine(args: dict):
    """LLaMA-Factory's Hugging Face inference engine for a chat recipe: model, adapter, tokenizer and template."""
    settle_logging()
    from llamafactory.chat.hf_engine import HuggingfaceEngine
    from llamafactory.hparams import get_infer_args

    model_args, data_args, finetuning_args, generating_args = get_infer_args(args)
    return HuggingfaceEngine(model_args, data_args, finetuning_args, generating_args)


def chat_all(chat_model, calls: list[tuple[list[dict], str | None]], **generation) -> list[str]:
    """Answers to every (messages, system) at once on the ChatModel's own event loop (vLLM batches them)."""
    import asyncio

    futures = [
        asyncio.run_coroutine_threadsafe(chat_model.achat(messages, system, **generation), chat_model._loop)
        for messages, system in calls
    ]
    return [future.result()[0].response_text for future in futures]


def sample_all(chat_model, calls: list[tuple[list[dict], str | None]], candidates: int, seed: int, **generation) -> list[list[str]]:
    """`candidates` sampled answers to each (messages, system), one prompt after another from a fixed seed, so the
    same model and settings give the same answers."""
    import asyncio

    from transformers import set_seed

    answers = []
    for index, (messages, system) in enumerate(calls):
        set_seed(seed + index)
        coroutine = chat_model.achat(messages, system, num_return_sequences=candidates, do_sample=True, **generation)
        answers.append([r.response_text for r in asyncio.run_coroutine_threadsafe(coroutine, chat_model._loop).result()])
    return answers


def similarity_scorer(tokenizer):
    """LLaMA-Factory's BLEU-4 / ROUGE computation, as its trainer's predict uses it."""
    from llamafactory.train.sft.metric import ComputeSimilarity

    return ComputeSimilarity(tokenizer=tokenizer)


class ChoiceScorer:
    """Single-answer A-D questions scored as LLaMA-Factory's evaluator scores them (llamafactory/eval/evaluator.py,
    Apache-2.0): its eval template writes the k-shot prompt, the recipe's chat template encodes it, and the answer is
    the choice whose letter has the highest next-token logit. The model is loaded once for any number of suites, the
    shots are given rather than drawn, and `args` (model, adapter, template, thinking mode, system prompt) build it
    through LLaMA-Factory's inference parser, as chat builds it."""

    def __init__(self, args: dict, lang: str = "zh"):
        settle_logging()
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.eval.template import get_eval_template
        from llamafactory.extras.constants import CHOICES
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        # what shapes the prompt, as LLaMA-Factory reads it (its defaults filled in): mcq.json records it
        self.prompt = {key: getattr(data_args, key) for key in ("template", "enable_thinking", "default_system")}
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.tokenizer.padding_side = "right"  # a row's last prompt token sits at its length - 1
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args)
        self.eval_template = get_eval_template(lang)
        self.choices = list(CHOICES)
        self.choice_ids = [self.tokenizer.encode(choice, add_special_tokens=False)[-1] for choice in CHOICES]

    def prompt_ids(self, question: dict, shots: list[dict], subject_name: str) -> list[int]:
        """The encoded prompt of one question ({"question", "A".."D", "answer"}) after its shots."""
        messages = self.eval_template.format_example(target_data=question, support_set=shots, subject_name=subject_name)
        return self.template.encode_oneturn(tokenizer=self.tokenizer, messages=messages)[0]

    def choice_logits(self, prompts: list[list[int]]):
        """The next-token logits of A, B, C and D after each prompt of one batch (a tensor, a row a prompt)."""
        import torch

        rows = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in prompts]
        batch = self.tokenizer.pad(rows, return_attention_mask=True, return_tensors="pt")
        last = batch["attention_mask"].sum(dim=-1) - 1  # on the CPU: it indexes tensors on any device the model spans
        kept, column = torch.unique(last, return_inverse=True)  # the vocabulary projection at those positions only
        with torch.inference_mode():
            logits = self.model(**batch.to(self.model.device), logits_to_keep=kept).logits
        return logits[torch.arange(len(rows)), column][:, self.choice_ids]

    def choose(self, prompts: list[list[int]]) -> list[str]:
        """The letter chosen for each prompt of one batch."""
        choice_logits = self.choice_logits(prompts)
        return [self.choices[index] for index in choice_logits.argmax(dim=-1).tolist()]


# ---------------------------------------------------------------- training (Ray Train workers, caretune bench)


def runs_in_its_own_process() -> bool:
    """Whether `llamafactory-cli train` would run the recipe in its own process here, as its launcher decides: one
    device, and none of torchrun (FORCE_TORCHRUN, USE_MCA), Ray, KTransformers or the v1 launcher (USE_V1)."""
    from llamafactory.extras.misc import get_device_count, is_env_enabled, use_kt, use_ray

    switched = any(is_env_enabled(name) for name in ("FORCE_TORCHRUN", "USE_MCA", "USE_V1"))
    return not switched and not use_ray() and not use_kt() and get_device_count() <= 1


def train_command(recipe: str | os.PathLike, overrides: dict) -> None:
    """`llamafactory-cli train RECIPE key=value ...` for overrides with text values. Where the CLI would run the
    recipe in its own process, it runs here (the recipe and overrides merged by OmegaConf, as the CLI merges them),
    saving its start-up, and the model's memory is freed after; else the CLI runs it. A failure raises RuntimeError
    after LLaMA-Factory's own traceback."""
    import gc
    import subprocess
    import traceback

    if not runs_in_its_own_process():
        command = [*cli_command(), "train", str(recipe), *(f"{key}={value}" for key, value in overrides.items())]
        if subprocess.call(command) != 0:
            raise RuntimeError(f"{' '.join(command)} failed")
        return
    from llamafactory.train.tuner import run_exp
    from omegaconf import OmegaConf

    args = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(Path(recipe).absolute()), OmegaConf.create(overrides)))
    try:
        run_exp(args)
    except (Exception, SystemExit) as err:
        traceback.print_exc()
        raise RuntimeError(f"llamafactory-cli train {recipe} failed in this process: {type(err).__name__}") from None
    finally:
        import torch

        gc.collect()  # the model sits in reference cycles (patched forwards): free it before the next run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def train_in_process(args: dict) -> None:
    """`llamafactory-cli train`'s code on a recipe's keys, in this process (a Ray Train worker, where
    torch.distributed is already set up); never LLaMA-Factory's own Ray launcher."""
    import os

    from llamafactory.train.tuner import run_exp

    os.environ.pop("USE_RAY", None)
    run_exp(dict(args))


def run_training(args: dict, callbacks: list, model_factory, on_batch: Callable[[list, dict], None]) -> None:
    """`llamafactory-cli train`'s code in this process, with the model built by `model_factory` (in place of
    AutoModelForCausalLM) and `on_batch(features, batch)` called on every collated batch."""
    from llamafactory.data import collator
    from llamafactory.model import loader
    from llamafactory.train.tuner import run_exp

    loader.AutoModelForCausalLM = model_factory
    collate = collator.SFTDataCollatorWith4DAttentionMask.__call__

    def observed(self, features):
        batch = collate(self, features)
        on_batch(features, batch)
        return batch

    collator.SFTDataCollatorWith4DAttentionMask.__call__ = observed
    try:
        run_exp(args, callbacks=callbacks)
    finally:
        collator.SFTDataCollatorWith4DAttentionMask.__call__ = collate


# ---------------------------------------------------------------- WebUI


def webui_folders(data_dir: str, cache_dir: str, config_dir: str) -> None:
    """Where the WebUI looks for dataset_info.json and keeps its state; set before its UI modules import."""
    import llamafactory.webui.common as common

    common.DEFAULT_DATA_DIR, common.DEFAULT_CACHE_DIR, common.DEFAULT_CONFIG_DIR = data_dir, cache_dir, config_dir


def webui_remember(model_name: str, model_path: str, template: str, saved_name: str, form: dict) -> None:
    """List the model among the WebUI's models (its path and template come with it), make it the last model
    in the WebUI's user config, and write `form` as a saved-arguments file its "Load arguments" reads."""
    import llamafactory.webui.common as common
    from llamafactory.extras.constants import DEFAULT_TEMPLATE, DownloadSource, register_model_group

    register_model_group({model_name: {DownloadSource.DEFAULT: model_path}})
    DEFAULT_TEMPLATE[model_name] = template
    common.save_config(lang=None, model_name=model_name, model_path=model_path)
    os.makedirs(common.DEFAULT_CONFIG_DIR, exist_ok=True)
    common.save_args(os.path.join(common.DEFAULT_CONFIG_DIR, saved_name), form)


def webui_chat_without_thinking() -> None:
    """The WebUI's chat box starts with "Enable thinking" off (LLaMA-Factory's own default is on), as every caretune
    recipe serves a hybrid Qwen3 (caretune.thinking)."""
    import llamafactory.webui.components.infer as infer

    if getattr(infer.create_chat_box, "caretune", False):
        return
    original = infer.create_chat_box

    def create_chat_box(*args, **kwargs):
        chatbot, messages, elems = original(*args, **kwargs)
        elems["enable_thinking"].value = False
        return chatbot, messages, elems

    create_chat_box.caretune = True
    infer.create_chat_box = create_chat_box


def webui_launch(saved_name: str, host: str, port: int, auth) -> None:
    """The WebUI, whose every page load ends by loading `saved_name` into the form as "Load arguments" does, and
    whose chat box starts in non-thinking mode."""
    import llamafactory.webui.common as common
    from llamafactory.webui.engine import Engine
    from llamafactory.webui.interface import create_ui

    webui_chat_without_thinking()

    resume = Engine.resume

    def resume_with_saved(engine):
        yield from resume(engine)  # the WebUI's own start: language, the model from the user config, …
        loaded = engine.runner.load_args(common.load_config().get("lang") or "en", saved_name)
        loaded[engine.manager.get_elem_by_id("train.config_path")] = saved_name
        yield loaded

    Engine.resume = resume_with_saved
    create_ui().queue().launch(server_name=host, server_port=port, inbrowser=False, auth=auth)
