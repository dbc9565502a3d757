"""A tiny randomly initialised Qwen3 around the real Qwen3 tokenizer: the CPU stand-in for Qwen3-8B.

Same architecture class, chat template, special tokens and LoRA target modules as Qwen3-8B, with
dimensions small enough to train on two CPU cores. Its answers are noise.
"""

from __future__ import annotations

import os
from pathlib import Path

SEED = 20261125
# Qwen3-8B's shape, scaled down: same vocabulary, grouped-query attention, untied embeddings.
TINY_CONFIG = {
    "vocab_size": 151_936,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
}


def build_tiny_model(target: str | os.PathLike) -> Path:
    """Write the tiny model and the verified offline Qwen3 tokenizer to `target` (atomically)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from caretune.basics.files import publish_dir
    from caretune.prep.tokenizer import reading_tokenizer

    tokenizer = reading_tokenizer()
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_CONFIG))
    model.generation_config.eos_token_id = [TINY_CONFIG["eos_token_id"], TINY_CONFIG["bos_token_id"]]
    model.generation_config.pad_token_id = TINY_CONFIG["pad_token_id"]

    def fill(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return publish_dir(target, fill, replace=True)
