"""`caretune bench`: LoRA training throughput of a Qwen3 shape through LLaMA-Factory's own trainer.

The model is built from its config with random weights (nothing is downloaded) directly on the
device, in bf16 on a GPU. Rows are synthetic: digit strings (one Qwen3 token per digit) whose
token lengths follow a measured length profile. Each variant (padding or neat packing, Liger
kernel, attention implementation) runs `llamafactory-cli train`'s code in a fresh process; after
`warmup` steps, the next `steps` are timed. Reported per variant: real (non-padding) and processed
tokens/s per GPU, MFU and HFU on real tokens (caretune.planning.estimate), peak memory, and the losses to show the run was sound.
On a machine without a GPU the same code runs the tiny Qwen3 on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.constants import DATASET_INFO, TEMPLATE
from caretune.planning import estimate
from caretune.planning.bench_report import compare_losses
from caretune.planning.bench_settings import BenchSettings
from caretune.planning.bench_variants import COMPILE_BEST, Variant, requested_variants, unavailable, variant_by_name
from caretune.planning.bench_worker import SEED
from caretune.prep.profiles import load_profile, sample_lengths

TINY = "tiny"  # the CPU stand-in's shape (caretune.training.tiny_model.TINY_CONFIG)
STARTUP_ALLOWANCE_S = 240  # with a time budget: seconds allowed for a variant's start-up (imports, model, data)


def synthetic_rows(lengths: list[int], overhead: int, seed: int = SEED) -> list[dict]:
    """Alpaca rows of digits whose templated token length is each target length (at least 2 tokens of text)."""
    rng = random.Random(seed)
    rows = []
    for length in lengths:
        text = max(2, length - overhead)
        query = max(1, text * 2 // 5)
        rows.append(
            {
                "instruction": "".join(rng.choices("0123456789", k=query)),
                "input": "",
                "output": "".join(rng.choices("0123456789", k=text - query)),
            }
        )
    return rows


def template_overhead(tokenizer) -> int:
    """Tokens the chat template adds around a one-digit question and answer."""
    from caretune.lf import chat_template

    template = chat_template(tokenizer, TEMPLATE, enable_thinking=False)
    prompt, answer = template.encode_oneturn(tokenizer, [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}])
    return len(prompt) + len(answer) - 2


def bench_model_dir(arch: estimate.Arch, root: Path) -> Path:
    """A folder with the shape's config.json and the verified Qwen3 tokenizer, and no weights."""
    from transformers import Qwen3Config

    from caretune.basics.files import publish_dir
    from caretune.prep.tokenizer import KNOWN_SPECIAL_IDS, offline_tokenizer

    target = root / arch.name.replace("/", "--")
    if (target / "config.json").exists():
        return target
    tokenizer = offline_tokenizer()
    special = {
        "bos_token_id": KNOWN_SPECIAL_IDS["<|endoftext|>"],
        "eos_token_id": KNOWN_SPECIAL_IDS["<|im_end|>"],
        "pad_token_id": KNOWN_SPECIAL_IDS["<|endoftext|>"],
    }

    def fill(staging: Path) -> None:
        Qwen3Config(
            **arch.to_config(), **special, max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6
        ).save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return publish_dir(target, fill, replace=True)


def resolve_bench_arch(model: str) -> estimate.Arch:
    """The architecture to bench: the tiny Qwen3's own config, or the model's (caretune.planning.plan.resolve_arch)."""
    if model == TINY:
        from caretune.training.tiny_model import TINY_CONFIG

        return estimate.Arch.from_config(TINY, TINY_CONFIG)
    from caretune.planning.plan import resolve_arch
    from caretune.planning.recipe_settings import PlanError

    try:
        return resolve_arch(model)[0]
    except PlanError as err:
        raise UserError(str(err)) from None


def train_args(
    variant: Variant,
    *,
    model_dir: Path,
    dataset_dir: Path,
    output_dir: Path,
    cutoff_len: int,
    micro_batch: int,
    pack_batch: int,
    steps: int,
    bf16: bool,
) -> dict:
    """The LLaMA-Factory arguments of one variant."""
    args = {
        "stage": "sft",
        "do_train": True,
        "model_name_or_path": str(model_dir),
        "train_from_scratch": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "lora_alpha": 16,
        "dataset": "bench",
        "dataset_dir": str(dataset_dir),
        "template": TEMPLATE,
        "enable_thinking": False,
        "cutoff_len": cutoff_len,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "max_steps": steps,
        "per_device_train_batch_size": pack_batch if variant.packing else micro_batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-4,
        "lr_scheduler_type": "constant",
        "gradient_checkpointing": variant.activations != "kept",
        "bf16": bf16,
        "seed": 42,
        "dataloader_num_workers": 0,
        "flash_attn": variant.attention,
        "enable_liger_kernel": variant.liger,
    }
    if variant.packing:
        args["neat_packing"] = True
    if variant.activations == "kept":
        args["disable_gradient_checkpointing"] = True
    if variant.activations == "offloaded":
        args["use_unsloth_gc"] = True
    if variant.compiled:
        args["torch_compile"] = True
    return args


def device_description() -> tuple[bool, str]:
    """Whether CUDA is used, and the device as the results name it."""
    import torch

    if torch.cuda.is_available():
        return True, f"1 x {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return False, f"CPU, {os.cpu_count()} cores (torch {torch.__version__})"


def device_memory_limit() -> int:
    """Bytes of the GPU the memory model may plan for: its memory times estimate.MEMORY_HEADROOM."""
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory * estimate.MEMORY_HEADROOM)


def memory_settings(variant: Variant) -> dict:
    """estimate.memory_breakdown's settings for one variant on the bench's single GPU (no DeepSpeed)."""
    return {
        "gpus": 1,
        "lora_rank": 8,
        "zero_stage": 0,
        "offload": False,
        "fused_cross_entropy": variant.liger,
        "activations": variant.activations,
    }


def modelled_peak(variant: Variant, arch: estimate.Arch, batch: int, cutoff_len: int) -> int:
    """The memory model's bytes for one step of `batch` full rows or packs, less its allowance for the CUDA context
    (which a measured `max_memory_allocated` does not see)."""
    total = estimate.memory_breakdown(arch, micro_batch_tokens=batch * cutoff_len, **memory_settings(variant))["total"]
    return total - estimate.FIXED_OVERHEAD


def step_shape(
    variant: Variant, arch: estimate.Arch, micro_batch: int, pack_batch: int, cutoff_len: int, memory_limit: int | None
) -> tuple[int, int, str]:
    """(rows or packs per step, cutoff_len, how that size was chosen) of one variant."""
    from caretune.planning.plan import FA2_LONG_PACK, largest_micro_batch

    if not variant.packing:
        return micro_batch, cutoff_len, "--micro-batch"
    if variant.long_pack:
        return 1, FA2_LONG_PACK, f"one {FA2_LONG_PACK}-token pack (FlashAttention-2 neat packing takes one per device)"
    if variant.activations == "kept" and memory_limit:
        fits = largest_micro_batch(arch, cutoff_len, memory_limit, memory_settings(variant))
        return fits, cutoff_len, f"the most packs the memory model fits in {memory_limit / estimate.GIB:.1f} GiB"
    return pack_batch, cutoff_len, "--pack-batch"


def bench_lengths(quantiles: list[int], step_sizes: list[int], steps: int, cutoff_len: int) -> list[int]:
    """Row lengths drawn from a length profile's quantiles for `steps` steps of the largest shape: `step_sizes` holds
    the padded variant's rows per step, then each packed shape's tokens per step."""
    mean_length = sum(quantiles) / len(quantiles)
    rows_per_step = max([step_sizes[0]] + [math.ceil(tokens / mean_length) for tokens in step_sizes[1:]])
    return [min(n, cutoff_len) for n in sample_lengths(quantiles, math.ceil(steps * rows_per_step * 1.5), SEED)]


def planned_variant(name: str, report: dict, shapes: dict, arch: estimate.Arch, budget: float | None):
    """(variant, its report entry) for one requested name; `compile-best` compiles the fastest variant run so far
    (None, with a skipped entry, when none ran)."""
    if name == COMPILE_BEST:
        ran = [v for v in report["variants"] if "real_tokens_per_s" in v]
        if not ran:
            report["variants"].append({"name": name, "skipped": "no other variant ran, so none to compile"})
            return None
        best = max(ran, key=lambda v: v["real_tokens_per_s"])
        variant = replace(variant_by_name(best["name"]), compiled=True)
        batch, cutoff_len, sized_by = best["batch"], best["cutoff_len"], f"as {best['name']}, the fastest before it"
    else:
        variant = variant_by_name(name)
        batch, cutoff_len, sized_by = shapes[name]
    entry = {
        "name": variant.name,
        **asdict(variant),
        "batch": batch,
        "cutoff_len": cutoff_len,
        "sized_by": sized_by,
        "time_budget_s": budget,
        "modelled_peak_bytes": modelled_peak(variant, arch, batch, cutoff_len) if batch else None,
    }
    return variant, entry


def run_bench(settings: BenchSettings, work_dir: Path, *, log=print, on_update=None) -> dict:
    """Every requested variant in its own process; returns the report (device, settings, per-variant results,
    and each variant's mean loss over the timed steps against the first variant's).

    `settings.variants` are names, each optionally with its own time budget (`NAME=SECONDS`, else `time_budget`).
    With a budget, a variant's training loop stops after that many seconds, once a step is timed, with the steps done
    so far (fewer timed steps than asked, reported as `timed_steps`), and its process is ended if start-up and
    training together pass the budget plus STARTUP_ALLOWANCE_S. `on_update(report)` is called after each variant."""
    from caretune.prep.tokenizer import load_qwen3_tokenizer

    if settings.steps < 1 or settings.warmup < 1:
        raise UserError("--steps and --warmup must be at least 1 (the first step compiles and allocates)")
    chosen = requested_variants(list(settings.variants) or None)
    cuda, device = device_description()
    arch = resolve_bench_arch(settings.model or ("Qwen/Qwen3-8B" if cuda else TINY))
    cutoff_len = settings.cutoff_len or (2048 if cuda else 512)
    micro_batch = settings.micro_batch or (24 if cuda else 4)
    memory_limit = device_memory_limit() if cuda else None
    shapes = {
        name: step_shape(variant_by_name(name), arch, micro_batch, settings.pack_batch, cutoff_len, memory_limit)
        for name, _ in chosen
        if name != COMPILE_BEST
    }
    quantiles = load_profile(settings.profile)  # a bad profile fails before any folder is made
    work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = bench_model_dir(arch, work_dir)
    rows_per_step = [micro_batch, settings.pack_batch * cutoff_len] + [batch * cutoff for batch, cutoff, _ in shapes.values()]
    lengths = bench_lengths(quantiles, rows_per_step, settings.steps + settings.warmup + 2, cutoff_len)
    dataset_dir = write_dataset(work_dir / "data", lengths, template_overhead(load_qwen3_tokenizer(str(model_dir))[0]))
    report = {
        "device": device,
        "model": arch.name,
        "params": arch.params(),
        "steps": settings.steps,
        "warmup": settings.warmup,
        "time_budget_s": settings.time_budget,
        "cutoff_len": cutoff_len,
        "micro_batch": micro_batch,
        "pack_batch": settings.pack_batch,
        "memory_limit_bytes": memory_limit,
        "profile": settings.profile,
        "rows": len(lengths),
        "date": time.strftime("%Y-%m-%d"),
        "variants": [],
    }
    runner = VariantRun(work_dir, model_dir, dataset_dir, arch, lengths, settings.steps, settings.warmup, cuda, log)
    for name, budget in chosen:
        planned = planned_variant(name, report, shapes, arch, budget or settings.time_budget)
        if planned is None:
            log(f"bench: {name}: skipped (no other variant ran)")
            continue
        variant, entry = planned
        batch, variant_cutoff, budget = entry["batch"], entry["cutoff_len"], entry["time_budget_s"]
        report["variants"].append(entry)
        reason = unavailable(variant, cuda) or (
            None if batch else f"the memory model fits not one {variant_cutoff}-token pack in this GPU's memory"
        )
        if reason:
            entry["skipped"] = reason
            log(f"bench: {variant.name}: skipped ({reason})")
        else:
            runner.run(variant, entry, batch, variant_cutoff, budget)
        compare_losses(report)
        if on_update:
            on_update(report)
    return report


def write_dataset(dataset_dir: Path, lengths: list[int], overhead: int) -> Path:
    """The synthetic rows and their dataset_info.json, for LLaMA-Factory to load."""
    dataset_dir.mkdir(exist_ok=True)
    (dataset_dir / "bench.json").write_text(json.dumps(synthetic_rows(lengths, overhead)), encoding="utf-8")
    (dataset_dir / DATASET_INFO).write_text(json.dumps({"bench": {"file_name": "bench.json"}}), encoding="utf-8")
    return dataset_dir


@dataclass
class VariantRun:
    """What every variant of one bench shares; `run` trains one variant in its own process."""

    work_dir: Path
    model_dir: Path
    dataset_dir: Path
    arch: estimate.Arch
    lengths: list[int]
    steps: int
    warmup: int
    cuda: bool
    log: Callable[[str], None]

    def env(self) -> dict[str, str]:
        """The worker's environment: offline, quiet, and one GPU (with several visible, the Trainer would wrap
        the model in DataParallel)."""
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LLAMAFACTORY_VERBOSITY": "WARN",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        if self.cuda:
            env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        return env

    def run(self, variant: Variant, entry: dict, batch: int, cutoff_len: int, time_budget: float | None) -> None:
        """Train `variant` with `batch` rows (padding) or packs (packing) of `cutoff_len` tokens per step; its
        figures (or its error) go into `entry`."""
        run_dir = self.work_dir / variant.name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        spec = {
            "args": train_args(
                variant,
                model_dir=self.model_dir,
                dataset_dir=self.dataset_dir,
                output_dir=run_dir / "out",
                cutoff_len=cutoff_len,
                micro_batch=batch,
                pack_batch=batch,
                steps=self.steps + self.warmup,
                bf16=self.cuda,
            ),
            "warmup": self.warmup,
            "time_budget": time_budget,
            "arch": asdict(self.arch),
            "mean_context": estimate.causal_context(self.lengths),
            "result": str(run_dir / "result.json"),
        }
        (run_dir / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        self.log(
            f"bench: {variant.name}: {batch} x {cutoff_len} tokens, {self.warmup} warm-up + {self.steps} timed steps"
            f"{f', {time_budget:g} s at most' if time_budget else ''} (log: {run_dir / 'train.log'})"
        )
        started = time.perf_counter()
        limit = time_budget + STARTUP_ALLOWANCE_S if time_budget else None
        with open(run_dir / "train.log", "w", encoding="utf-8") as out:
            try:
                code = subprocess.call(
                    [sys.executable, "-m", "caretune.planning.bench_worker", str(run_dir / "spec.json")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    timeout=limit,
                )
            except subprocess.TimeoutExpired:
                code = None
        entry["wall_s"] = round(time.perf_counter() - started, 1)
        if code != 0 or not (run_dir / "result.json").exists():
            tail = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            entry["error"] = (
                f"ended after {limit:.0f} s (time budget + start-up allowance)"
                if code is None
                else f"exit {code}: {tail[0] if tail else 'no output'}"
            )
            self.log(f"bench: {variant.name}: FAILED {entry['error']}")
            return
        entry.update(json.loads((run_dir / "result.json").read_text(encoding="utf-8")))
        self.log(f"bench: {variant.name}: {entry['real_tokens_per_s']:,.0f} real tokens/s ({entry['wall_s']:.0f} s with start-up)")
