"""The memory model's step memory against a measured peak, on CPU: one LoRA forward and backward pass.

    python benchmarks/activation_memory.py [--tokens 2048] [--out FILE.json]

For each shape (the tiny Qwen3 as shipped, and a wider one with a small vocabulary, where the layers rather than the
logits dominate) and each way of keeping activations (gradient checkpointing on, off), it builds the model in bf16
with random weights, puts LoRA (rank 8, fp32) on every linear layer, and runs one forward pass under bf16 autocast
and one backward pass, as LLaMA-Factory's trainer does with `bf16: true`, over one packed row of `--tokens` tokens,
under PyTorch's profiler with memory recording. The measured figure is the peak
of the bytes allocated during that step (the weights were allocated before it). The model's figure is
caretune.planning.estimate.memory_breakdown's activations and logits for the same tokens (no weights, no GPU
allowance, no LoRA optimizer state: the step has no optimizer). Prints a table and writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from caretune.planning import estimate
from caretune.training.tiny_model import TINY_CONFIG

WIDE_CONFIG = {  # the tiny Qwen3's layers eight times wider, twice as many, and a small vocabulary
    **TINY_CONFIG,
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_hidden_layers": 4,
    "vocab_size": 4096,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
SHAPES = {"tiny": TINY_CONFIG, "wide": WIDE_CONFIG}
MODES = {"checkpointed": True, "kept": False}  # estimate.ACTIVATION_MODES -> gradient checkpointing
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measured_step_peak(config: dict, tokens: int, checkpointing: bool) -> int:
    """Peak bytes allocated during one LoRA forward and backward pass of `tokens` tokens, above what was allocated
    before it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**config, attn_implementation="sdpa")).to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, lora_dropout=0.0))
    for parameter in model.parameters():
        if parameter.requires_grad:  # LLaMA-Factory keeps trainable parameters in fp32
            parameter.data = parameter.data.float()
    model.train()
    ids = torch.randint(0, config["vocab_size"], (1, tokens))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)  # as the Trainer's bf16 mixed precision
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def modelled_step(config: dict, tokens: int, activations: str) -> int:
    """The memory model's bytes for the same step: activations and (unfused) logits."""
    arch = estimate.Arch.from_config("shape", config)
    parts = estimate.memory_breakdown(
        arch,
        micro_batch_tokens=tokens,
        gpus=1,
        lora_rank=8,
        zero_stage=0,
        offload=False,
        fused_cross_entropy=False,
        activations=activations,
    )
    return sum(parts[key] for key in ("checkpointed_activations", "recomputed_layer", "kept_activations", "logits"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/activation_memory.json"))
    args = parser.parse_args()
    rows = []
    for shape, config in SHAPES.items():
        for activations, checkpointing in MODES.items():
            started = time.perf_counter()
            measured = measured_step_peak(config, args.tokens, checkpointing)
            modelled = modelled_step(config, args.tokens, activations)
            rows.append(
                {
                    "shape": shape,
                    "activations": activations,
                    "tokens": args.tokens,
                    "measured_bytes": measured,
                    "modelled_bytes": modelled,
                    "modelled_over_measured": round(modelled / measured, 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
    report = {"date": time.strftime("%Y-%m-%d"), "device": "CPU", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{'shape':6} {'activations':13} {'measured MiB':>12} {'model MiB':>10} {'model/measured':>15}")
    for row in rows:
        print(
            f"{row['shape']:6} {row['activations']:13} {row['measured_bytes'] / 2**20:12.1f} "
            f"{row['modelled_bytes'] / 2**20:10.1f} {row['modelled_over_measured']:15.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
