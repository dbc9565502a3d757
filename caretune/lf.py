"""Where caretune reaches into LLaMA-Factory besides its config: its CLI, its dataset loading, its chat engine."""

from __future__ import annotations

import sys
from pathlib import Path


def cli_command() -> list[str]:
    """`llamafactory-cli` of this environment (beside this Python), or its module as a fallback."""
    cli = Path(sys.executable).with_name("llamafactory-cli")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "llamafactory.cli"]


def load_aligned(name: str, dataset_dir: str, model_name_or_path: str, scratch: str, **data_kwargs):
    """One registered dataset loaded and aligned by LLaMA-Factory's own code, as training sees it.

    Returns `(aligned dataset, data_args, training_args)`; `data_kwargs` go to its DataArguments.
    """
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    data_args = DataArguments(dataset=name, dataset_dir=dataset_dir, **data_kwargs)
    model_args = ModelArguments(model_name_or_path=model_name_or_path)
    training_args = Seq2SeqTrainingArguments(output_dir=scratch, report_to=[])
    attr = get_dataset_list([name], dataset_dir)[0]
    return _load_single_dataset(attr, model_args, data_args, training_args), data_args, training_args


def chat_engine(args: dict):
    """LLaMA-Factory's Hugging Face inference engine for a chat recipe: model, adapter, tokenizer and template."""
    from llamafactory.chat.hf_engine import HuggingfaceEngine
    from llamafactory.hparams import get_infer_args

    model_args, data_args, finetuning_args, generating_args = get_infer_args(args)
    return HuggingfaceEngine(model_args, data_args, finetuning_args, generating_args)
