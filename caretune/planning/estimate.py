"""The cost model behind `caretune plan` and `caretune bench`: every formula in one place.

Units: parameters and tokens are counts, memory is bytes, compute is FLOP.

Parameters (Qwen3, no attention bias): per layer q/k/v/o projections, a SwiGLU MLP (gate, up,
down), two RMSNorms of `hidden` and the q/k RMSNorms of `head_dim`; plus the embedding, the LM head
(absent when tied) and the final norm.

LoRA on every linear layer (`lora_target: all`): `rank x (in + out)` per projection.

Compute per trained token. N is the matmul weights (layers plus the LM head; an embedding lookup is free), c the
positions a token attends to (mean (n+1)/2 in a causal row of n tokens; rows stay isolated under neat packing),
and attention's scores and values cost 4·L·H·d·c in a forward pass.
- Model FLOPs, the numerator of MFU: forward 2·N plus activation gradients 2·N (LoRA leaves no weight gradient
  worth counting), so 4·N, plus attention forward and its two backward matmuls, 3 x 4·L·H·d·c.
  MFU = real tokens/s x (4·N + 12·L·H·d·c) / the GPU's dense bf16 peak.
- Hardware FLOPs, the numerator of HFU: what the GPU computes. With gradient checkpointing the forward pass runs
  again during backward: 6·N + 16·L·H·d·c; without it, the model FLOPs.
  HFU = real tokens/s x hardware FLOP per token / peak. Turning checkpointing off lowers HFU while it raises
  tokens/s; MFU only rises with tokens/s.

Memory per GPU during LoRA training with gradient checkpointing, for a micro-batch of T processed
tokens (padding included):
- frozen weights: 2·N_all bytes (bf16); ZeRO-3 divides by the GPU count, ZeRO-3 offload keeps
  them in host memory;
- LoRA parameters in fp32 with their gradient and two Adam moments: 16 bytes each; ZeRO-2 splits
  the 12 optimizer and gradient bytes across GPUs, ZeRO-3 all 16, offload moves them to the host;
- checkpointed activations: one bf16 hidden state per layer, 2·L·h bytes per token;
- the one layer recomputed during backward: its bf16 tensors per token, 2·(9h + 3·H·d + 2·K·d + 5·I)
  bytes (norm outputs, q/k/v/o, gate/up/activation/product/down, the LoRA dropout copies of each
  projection's input); attention runs in a fused kernel, so no T x T scores are kept;
- without gradient checkpointing (`disable_gradient_checkpointing`) every layer keeps those tensors and its
  input instead: L·(2h + the recomputed layer's bytes) per token, nothing recomputed;
- with LLaMA-Factory's `use_unsloth_gc` the checkpointed hidden states wait in host memory, so the GPU holds only
  the recomputed layer (the host bytes are reported apart, as `host_activations`);
- logits: at the peak, in the loss's backward pass, three fp32 tensors per token and vocabulary entry, 12 bytes:
  the log-probabilities kept for backward, their gradient, and the gradient of the logits (the bf16 logits and
  their fp32 upcast are freed by then; measured on CPU by benchmarks/activation_memory.py); a fused linear
  cross-entropy (Liger) instead holds the fp32 gradient of the hidden states (4·h bytes per token) and one
  chunk of fp32 logits and gradient, the chunk being the tokens per `vocab / hidden` rounded up to a power of
  two, as Liger sizes it;
- a fixed allowance for the CUDA context, allocator slack and communication buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1 << 30
BF16 = 2
FP32 = 4
LOGIT_BYTES = 3 * FP32  # log-probabilities kept for backward, their gradient, the logits' gradient (docstring)
LORA_STATE_BYTES = 16  # fp32 parameter, gradient, Adam first and second moments
LORA_GRAD_OPTIM_BYTES = 12  # the part ZeRO-2 partitions
FIXED_OVERHEAD = 3 * GIB  # CUDA context, allocator fragmentation, NCCL/DeepSpeed buffers
PAD_MULTIPLE = 8  # LLaMA-Factory pads training batches to a multiple of 8
DEFAULT_HFU = 0.40  # assumed hardware FLOPs utilisation when no bench figure is given; stated in every plan
MEMORY_HEADROOM = 0.90  # a plan warns above this share of the GPU's memory


@dataclass(frozen=True)
class Arch:
    """The numbers of a Qwen3 dense model that costs depend on."""

    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, name: str, config: dict) -> Arch:
        """From a Hugging Face `config.json` of a Qwen3 model."""
        try:
            return cls(
                name=name,
                vocab=config["vocab_size"],
                hidden=config["hidden_size"],
                intermediate=config["intermediate_size"],
                layers=config["num_hidden_layers"],
                heads=config["num_attention_heads"],
                kv_heads=config["num_key_value_heads"],
                head_dim=config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
                tied=bool(config.get("tie_word_embeddings", False)),
            )
        except KeyError as err:
            raise ValueError(f"{name}: config.json lacks {err.args[0]}; not a Qwen3-style decoder") from None

    def to_config(self) -> dict:
        """The `Qwen3Config` keys that rebuild this shape."""
        return {
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "tie_word_embeddings": self.tied,
        }

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear projection in one layer: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def layer_params(self) -> int:
        """Parameters of one decoder layer (linear weights and norms)."""
        return sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden + 2 * self.head_dim

    def embedding_params(self) -> int:
        """Parameters of the token embedding."""
        return self.vocab * self.hidden

    def params(self) -> int:
        """All parameters, as `model.num_parameters()` counts them (a tied head counted once)."""
        head = 0 if self.tied else self.embedding_params()
        return self.layers * self.layer_params() + self.embedding_params() + head + self.hidden

    def non_embedding_params(self) -> int:
        """Parameters outside the embedding and the output head."""
        return self.params() - self.embedding_params() * (1 if self.tied else 2)

    def matmul_params(self) -> int:
        """Weights that multiply every token: the layers and the LM head (a lookup costs nothing)."""
        return self.layers * self.layer_params() + self.embedding_params()

    def lora_params(self, rank: int) -> int:
        """Trainable parameters of LoRA on every linear layer."""
        return self.layers * rank * sum(a + b for a, b in self.linear_shapes())


# Architecture of the Qwen3 dense family (from each model's config.json), used when the model's own
# config cannot be read (offline, not downloaded).
QWEN3_FAMILY = {
    "Qwen/Qwen3-0.6B": Arch("Qwen/Qwen3-0.6B", 151_936, 1024, 3072, 28, 16, 8, 128, True),
    "Qwen/Qwen3-1.7B": Arch("Qwen/Qwen3-1.7B", 151_936, 2048, 6144, 28, 16, 8, 128, True),
    "Qwen/Qwen3-4B": Arch("Qwen/Qwen3-4B", 151_936, 2560, 9728, 36, 32, 8, 128, True),
    "Qwen/Qwen3-8B": Arch("Qwen/Qwen3-8B", 151_936, 4096, 12288, 36, 32, 8, 128, False),
    "Qwen/Qwen3-14B": Arch("Qwen/Qwen3-14B", 151_936, 5120, 17408, 40, 40, 8, 128, False),
    "Qwen/Qwen3-32B": Arch("Qwen/Qwen3-32B", 151_936, 5120, 25600, 64, 64, 8, 128, False),
}


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # usable device memory
    bf16_tflops: float  # dense bf16 peak (no sparsity)


DEFAULT_GPU = "h800"  # the walkthrough's hardware
GPUS = {
    gpu.name: gpu
    for gpu in (
        Gpu("h800", 80, 989.4),
        Gpu("h100", 80, 989.4),
        Gpu("h200", 141, 989.4),
        Gpu("h20", 96, 148.0),
        Gpu("a800", 80, 312.0),
        Gpu("a100-80g", 80, 312.0),
        Gpu("a100-40g", 40, 312.0),
        Gpu("l40s", 48, 362.1),
    )
}


def gpu_from_device_name(device_name: str) -> Gpu | None:
    """The table entry for a `torch.cuda.get_device_name()` string, when known."""
    lowered = device_name.lower()
    for key in ("h800", "h200", "h100", "h20", "a800", "l40s"):
        if key in lowered:
            return GPUS[key]
    if "a100" in lowered:
        return GPUS["a100-40g" if "40g" in lowered else "a100-80g"]
    return None


def causal_context(row_lengths: list[int]) -> float:
    """Mean number of positions a token attends to over causal rows: sum n(n+1)/2 / sum n."""
    tokens = sum(row_lengths)
    return sum(n * (n + 1) / 2 for n in row_lengths) / tokens if tokens else 0.0


def model_flops_per_token(arch: Arch, mean_context: float) -> float:
    """Model FLOP per real token of LoRA training (MFU's numerator; module docstring)."""
    return 4 * arch.matmul_params() + 3 * 4 * arch.layers * arch.heads * arch.head_dim * mean_context


def hardware_flops_per_token(arch: Arch, mean_context: float, checkpointing: bool = True) -> float:
    """FLOP per real token the GPU computes (HFU's numerator): the model FLOPs, plus the recomputed forward pass
    under gradient checkpointing (module docstring)."""
    if not checkpointing:
        return model_flops_per_token(arch, mean_context)
    return 6 * arch.matmul_params() + 4 * 4 * arch.layers * arch.heads * arch.head_dim * mean_context


def tokens_per_second(arch: Arch, gpu: Gpu, hfu: float, mean_context: float, checkpointing: bool = True) -> float:
    """Real tokens/s one GPU trains at the given hardware FLOPs utilisation."""
    return hfu * gpu.bf16_tflops * 1e12 / hardware_flops_per_token(arch, mean_context, checkpointing)


def mfu(arch: Arch, gpu: Gpu, real_tokens_per_s: float, mean_context: float) -> float:
    """Model FLOPs utilisation of a measured real-token rate."""
    return real_tokens_per_s * model_flops_per_token(arch, mean_context) / (gpu.bf16_tflops * 1e12)


def hfu(arch: Arch, gpu: Gpu, real_tokens_per_s: float, mean_context: float, checkpointing: bool = True) -> float:
    """Hardware FLOPs utilisation of a measured real-token rate."""
    return real_tokens_per_s * hardware_flops_per_token(arch, mean_context, checkpointing) / (gpu.bf16_tflops * 1e12)


def liger_chunk_tokens(arch: Arch, tokens: int) -> int:
    """Rows of logits Liger's fused linear cross-entropy materialises at once."""
    chunks = math.ceil(arch.vocab / arch.hidden)
    return 1 << max(0, math.ceil(math.log2(max(1, math.ceil(tokens / chunks)))))


ACTIVATION_MODES = ("checkpointed", "kept", "offloaded")  # gradient checkpointing, none, use_unsloth_gc


def memory_breakdown(
    arch: Arch,
    *,
    micro_batch_tokens: int,
    gpus: int,
    lora_rank: int,
    zero_stage: int,
    offload: bool,
    fused_cross_entropy: bool,
    activations: str = "checkpointed",
) -> dict[str, int]:
    """Bytes per GPU by component (module docstring); `total` is their sum. `activations`: checkpointed (gradient
    checkpointing), kept (none) or offloaded (use_unsloth_gc, the checkpoints in host memory)."""
    if activations not in ACTIVATION_MODES:
        raise ValueError(f"activations must be one of {ACTIVATION_MODES}")
    shard = gpus if zero_stage >= 3 else 1
    weights = 0 if offload else BF16 * arch.params() // shard
    lora = arch.lora_params(lora_rank)
    if offload:
        lora_state = 0
    elif zero_stage >= 3:
        lora_state = LORA_STATE_BYTES * lora // gpus
    elif zero_stage == 2:
        lora_state = (LORA_STATE_BYTES - LORA_GRAD_OPTIM_BYTES) * lora + LORA_GRAD_OPTIM_BYTES * lora // gpus
    else:
        lora_state = LORA_STATE_BYTES * lora
    h, t = arch.hidden, micro_batch_tokens
    per_token_layer = BF16 * (9 * h + 3 * arch.heads * arch.head_dim + 2 * arch.kv_heads * arch.head_dim + 5 * arch.intermediate)
    logits_unfused = LOGIT_BYTES * t * arch.vocab
    logits_fused = FP32 * t * h + 2 * FP32 * liger_chunk_tokens(arch, t) * arch.vocab
    checkpoints = BF16 * arch.layers * h * t
    parts = {
        "weights": weights,
        "lora_states": lora_state,
        "checkpointed_activations": checkpoints if activations == "checkpointed" else 0,
        "recomputed_layer": per_token_layer * t if activations != "kept" else 0,
        "kept_activations": arch.layers * (BF16 * h + per_token_layer) * t if activations == "kept" else 0,
        "logits": logits_fused if fused_cross_entropy else logits_unfused,
        "overhead": FIXED_OVERHEAD,
    }
    parts["total"] = sum(parts.values())
    parts["logits_unfused"] = logits_unfused
    parts["logits_fused"] = logits_fused
    parts["host_activations"] = checkpoints if activations == "offloaded" else 0
    return parts


def round_up(value: int, multiple: int) -> int:
    """`value` rounded up to a multiple of `multiple`."""
    return -(-value // multiple) * multiple


def padded_length(longest: int) -> int:
    """Length LLaMA-Factory's collator pads a training batch to."""
    return round_up(longest, PAD_MULTIPLE)


def optimizer_steps(micro_batches_per_gpu_epoch: int, accumulation: int, epochs: float) -> int:
    """Optimizer steps, as the Hugging Face Trainer counts them."""
    per_epoch = max(micro_batches_per_gpu_epoch // accumulation + int(micro_batches_per_gpu_epoch % accumulation > 0), 1)
    return math.ceil(epochs * per_epoch)
