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
from caretune.prep.profiles import load_profile, sample_lengths

TINY = "tiny"  # the CPU stand-in's shape (caretune.training.tiny_model.TINY_CONFIG)
SEED = 20261125
FLASH_ATTN_NOTE = "CARETUNE_GPU_KIT_MANIFEST"  # set by gpu_check.sh: the kit.json that says why flash-attn is absent
STARTUP_ALLOWANCE_S = 240  # with a time budget: seconds allowed for a variant's start-up (imports, model, data)


ACTIVATION_SUFFIXES = {"checkpointed": "", "kept": "-no-gc", "offloaded": "-unsloth-gc"}  # estimate.ACTIVATION_MODES
LONG_PACK_SUFFIX = "-long-pack"
COMPILE_SUFFIX = "-compile"
COMPILE_BEST = "compile-best"  # torch_compile on the fastest variant of the same bench


@dataclass(frozen=True)
class Variant:
    packing: bool
    liger: bool
    attention: str  # "sdpa" or "fa2"
    activations: str = "checkpointed"  # gradient checkpointing; "kept": none; "offloaded": use_unsloth_gc
    long_pack: bool = False  # one plan.FA2_LONG_PACK-token pack per step instead of --pack-batch packs
    compiled: bool = False  # torch_compile

    @property
    def name(self) -> str:
        base = "-".join(["neat-packing" if self.packing else "padding", self.attention] + (["liger"] if self.liger else []))
        return (
            base
            + ACTIVATION_SUFFIXES[self.activations]
            + (LONG_PACK_SUFFIX if self.long_pack else "")
            + (COMPILE_SUFFIX if self.compiled else "")
        )


ALL_VARIANTS = [
    Variant(packing, liger, attention) for packing in (False, True) for attention in ("sdpa", "fa2") for liger in (False, True)
]


def variant_by_name(name: str) -> Variant:
    """The variant called `name`: one of ALL_VARIANTS, then optionally -no-gc or -unsloth-gc, -long-pack
    (neat packing only) and -compile, in that order."""
    rest, changes = name, {}
    if rest.endswith(COMPILE_SUFFIX):
        rest, changes["compiled"] = rest[: -len(COMPILE_SUFFIX)], True
    if rest.endswith(LONG_PACK_SUFFIX):
        rest, changes["long_pack"] = rest[: -len(LONG_PACK_SUFFIX)], True
    for mode, suffix in ACTIVATION_SUFFIXES.items():
        if suffix and rest.endswith(suffix):
            rest, changes["activations"] = rest[: -len(suffix)], mode
    for variant in ALL_VARIANTS:
        if variant.name == rest:
            if changes.get("long_pack") and not variant.packing:
                raise UserError(f"variant {name!r}: one long pack needs neat packing")
            return replace(variant, **changes)
    raise UserError(
        f"unknown variant {name!r}; one of {', '.join(v.name for v in ALL_VARIANTS)}, optionally followed by "
        f"{' or '.join(s for s in ACTIVATION_SUFFIXES.values() if s)}, {LONG_PACK_SUFFIX} and {COMPILE_SUFFIX}; "
        f"or {COMPILE_BEST}"
    )


def unavailable(variant: Variant, cuda: bool) -> str | None:
    """Why a variant cannot run here, or None."""
    import importlib.util

    if variant.attention == "fa2":
        if not cuda:
            return "flash attention 2 needs a CUDA GPU"
        if importlib.util.find_spec("flash_attn") is None:
            return f"flash attention 2 needs flash-attn, which is not installed here ({flash_attn_absence()})"
        try:
            import flash_attn  # noqa: F401  (a wheel built for another torch or CUDA fails here)
        except Exception as err:  # ImportError or an undefined-symbol OSError
            return f"flash-attn does not import here: {type(err).__name__}: {str(err).splitlines()[0]}"
    if variant.activations == "offloaded" and not cuda:
        return "use_unsloth_gc moves activations between a CUDA GPU and host memory"
    if variant.liger and not (cuda and importlib.util.find_spec("liger_kernel")):
        return "the Liger kernel needs a CUDA GPU and `pip install liger-kernel`"
    return None


def flash_attn_absence() -> str:
    """Why flash-attn is missing: what the offline kit recorded (FLASH_ATTN_NOTE names its kit.json), or the install hint."""
    note = os.environ.get(FLASH_ATTN_NOTE)
    if note and Path(note).is_file():
        try:
            return json.loads(Path(note).read_text(encoding="utf-8"))["flash_attn"]["absent"]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return "`pip install flash-attn` against this machine's torch and CUDA"


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


def summarise(
    records: list[tuple[int, int]],
    times: list[float],
    warmup: int,
    arch: estimate.Arch,
    gpu: estimate.Gpu | None,
    mean_context: float,
    checkpointing: bool = True,
) -> dict:
    """Throughput over the timed steps: records[i] = (real, processed) tokens of step i, times[i] its end; MFU and
    HFU as caretune.planning.estimate defines them (HFU counts the recomputed forward under checkpointing)."""
    timed = records[warmup : len(times)]
    elapsed = times[-1] - times[warmup - 1]
    real = sum(r for r, _ in timed)
    processed = sum(p for _, p in timed)
    real_rate, processed_rate = real / elapsed, processed / elapsed
    return {
        "timed_steps": len(timed),
        "seconds": round(elapsed, 3),
        "real_tokens": real,
        "processed_tokens": processed,
        "real_tokens_per_s": round(real_rate, 1),
        "processed_tokens_per_s": round(processed_rate, 1),
        "non_padding_share": round(real / processed, 4),
        "mfu": round(estimate.mfu(arch, gpu, real_rate, mean_context), 4) if gpu else None,
        "hfu": round(estimate.hfu(arch, gpu, real_rate, mean_context, checkpointing), 4) if gpu else None,
    }


def budget_spent(elapsed_s: float, budget_s: float | None, steps_done: int, warmup: int) -> bool:
    """Whether a variant's time budget stops it now: only once at least one timed step is done, so a budget
    spent on start-up or warm-up still yields figures (the start-up allowance bounds the wall time)."""
    return bool(budget_s) and steps_done > warmup and elapsed_s > budget_s


def built_on(device: str, dtype):
    """A stand-in for `AutoModelForCausalLM` in LLaMA-Factory's loader: `from_config` materialises random
    weights on `device` in `dtype`, with no CPU copy of a large model."""
    import torch
    from transformers import AutoModelForCausalLM

    class OnDevice:
        @staticmethod
        def from_config(config, **kwargs):
            torch.manual_seed(SEED)
            with torch.device(device):
                return AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)

    return OnDevice


def worker(spec_path: str) -> None:
    """One variant in this process: LLaMA-Factory's trainer with counters on its collator and step ends."""
    import resource

    import torch
    from transformers import TrainerCallback

    from caretune.lf import run_training

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    records: list[tuple[int, int]] = []

    def count(features, batch) -> None:
        real = sum(sum(1 for m in f["attention_mask"] if m != 0) for f in features)
        records.append((real, batch["input_ids"].numel()))

    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == spec["warmup"] and cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_train_begin(self, args, state, control, **kwargs):
            times.clear()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter())
            if budget_spent(times[-1] - self.started, spec["time_budget"], len(times), spec["warmup"]):
                control.should_training_stop = True  # report the steps done so far

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    model_factory = built_on("cuda", torch.bfloat16) if cuda else built_on("cpu", torch.float32)
    run_training(spec["args"], [Clock()], model_factory, count)
    if len(times) <= spec["warmup"]:
        raise SystemExit(f"training ended after {len(times)} steps, before the first timed step (warm-up {spec['warmup']})")
    arch = estimate.Arch(**spec["arch"])
    gpu = estimate.gpu_from_device_name(torch.cuda.get_device_name()) if cuda else None
    checkpointing = not spec["args"].get("disable_gradient_checkpointing", False)
    result = summarise(records, times, spec["warmup"], arch, gpu, spec["mean_context"], checkpointing)
    result.update(
        peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        losses=losses,
        finite=bool(losses) and all(math.isfinite(x) for x in losses),
    )
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


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


def requested_variants(variants: list[str] | None) -> list[tuple[str, float | None]]:
    """(name, its own time budget or None) of each `--variant NAME[=SECONDS]`; ALL_VARIANTS when none, and
    COMPILE_BEST last wherever it was named (it compiles the fastest of the others)."""
    if not variants:
        return [(v.name, None) for v in ALL_VARIANTS]
    parsed = []
    for text in variants:
        name, _, seconds = text.partition("=")
        budget = None
        if seconds:
            try:
                budget = float(seconds)
                if not budget > 0:
                    raise ValueError
            except ValueError:
                raise UserError(f"--variant {text!r}: the time budget after '=' must be a positive number of seconds") from None
        if name != COMPILE_BEST:
            variant_by_name(name)
        parsed.append((name, budget))
    return sorted(parsed, key=lambda item: item[0] == COMPILE_BEST)


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


def run_bench(
    *,
    model: str | None,
    variants: list[str] | None,
    steps: int,
    warmup: int,
    micro_batch: int | None,
    pack_batch: int,
    cutoff_len: int | None,
    profile: str,
    work_dir: Path,
    time_budget: float | None = None,
    log=print,
    on_update=None,
) -> dict:
    """Every requested variant in its own process; returns the report (device, settings, per-variant results,
    and each variant's mean loss over the timed steps against the first variant's).

    `variants` are names, each optionally with its own time budget (`NAME=SECONDS`, else `time_budget`). With a
    budget, a variant's training loop stops after that many seconds, once a step is timed, with the steps done so
    far (fewer timed steps than asked, reported as `timed_steps`), and its process is ended if start-up and training together
    pass the budget plus STARTUP_ALLOWANCE_S. `on_update(report)` is called after each variant, so a caller can
    keep the results so far."""
    from caretune.prep.tokenizer import load_qwen3_tokenizer

    if steps < 1 or warmup < 1:
        raise UserError("--steps and --warmup must be at least 1 (the first step compiles and allocates)")
    chosen = requested_variants(variants)
    cuda, device = device_description()
    model = model or ("Qwen/Qwen3-8B" if cuda else TINY)
    arch = resolve_bench_arch(model)
    cutoff_len = cutoff_len or (2048 if cuda else 512)
    micro_batch = micro_batch or (24 if cuda else 4)
    memory_limit = device_memory_limit() if cuda else None
    shapes = {
        name: step_shape(variant_by_name(name), arch, micro_batch, pack_batch, cutoff_len, memory_limit)
        for name, _ in chosen
        if name != COMPILE_BEST
    }
    quantiles = load_profile(profile)
    work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = bench_model_dir(arch, work_dir)
    tokenizer, _ = load_qwen3_tokenizer(str(model_dir))
    overhead = template_overhead(tokenizer)
    mean_length = sum(quantiles) / len(quantiles)
    rows_per_step = max(
        [micro_batch, math.ceil(pack_batch * cutoff_len / mean_length)]
        + [math.ceil(batch * cutoff / mean_length) for batch, cutoff, _ in shapes.values()]
    )
    rows_needed = (steps + warmup + 2) * rows_per_step
    lengths = [min(n, cutoff_len) for n in sample_lengths(quantiles, math.ceil(rows_needed * 1.5), SEED)]
    dataset_dir = write_dataset(work_dir / "data", lengths, overhead)
    report = {
        "device": device,
        "model": arch.name,
        "params": arch.params(),
        "steps": steps,
        "warmup": warmup,
        "time_budget_s": time_budget,
        "cutoff_len": cutoff_len,
        "micro_batch": micro_batch,
        "pack_batch": pack_batch,
        "memory_limit_bytes": memory_limit,
        "profile": profile,
        "rows": len(lengths),
        "date": time.strftime("%Y-%m-%d"),
        "variants": [],
    }
    runner = VariantRun(
        work_dir=work_dir,
        model_dir=model_dir,
        dataset_dir=dataset_dir,
        arch=arch,
        lengths=lengths,
        steps=steps,
        warmup=warmup,
        cuda=cuda,
        log=log,
    )
    for name, budget in chosen:
        if name == COMPILE_BEST:
            ran = [v for v in report["variants"] if "real_tokens_per_s" in v]
            if not ran:
                report["variants"].append({"name": name, "skipped": "no other variant ran, so none to compile"})
                log(f"bench: {name}: skipped (no other variant ran)")
                continue
            best = max(ran, key=lambda v: v["real_tokens_per_s"])
            variant = replace(variant_by_name(best["name"]), compiled=True)
            shape = (best["batch"], best["cutoff_len"], f"as {best['name']}, the fastest before it")
        else:
            variant, shape = variant_by_name(name), shapes[name]
        batch, variant_cutoff, sized_by = shape
        budget = budget or time_budget
        entry = {
            "name": variant.name,
            **asdict(variant),
            "batch": batch,
            "cutoff_len": variant_cutoff,
            "sized_by": sized_by,
            "time_budget_s": budget,
            "modelled_peak_bytes": modelled_peak(variant, arch, batch, variant_cutoff) if batch else None,
        }
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


LOSS_TOLERANCE_SHARE = 0.02  # the least difference in mean loss called a mismatch: 2% of the baseline's
LOSS_NOISE_SIGMAS = 3.0  # or this many standard errors of the difference, when larger


def compare_losses(report: dict) -> None:
    """Each measured variant's mean loss over its timed steps against the first measured variant's (the
    baseline), within noise: max(LOSS_NOISE_SIGMAS standard errors of the difference, LOSS_TOLERANCE_SHARE of
    the baseline's mean). Sets `loss_check` on each, `baseline` and `fastest_matching` on the report."""
    warmup = report["warmup"]
    ran = [v for v in report["variants"] if "real_tokens_per_s" in v and len(v["losses"]) > warmup]
    if not ran:
        return
    baseline = ran[0]

    def mean_and_variance(losses: list[float]) -> tuple[float, float]:
        timed = losses[warmup:]
        mean = sum(timed) / len(timed)
        variance = sum((x - mean) ** 2 for x in timed) / max(1, len(timed) - 1) / len(timed)
        return mean, variance  # the variance of the mean

    base_mean, base_variance = mean_and_variance(baseline["losses"])
    for variant in ran:
        mean, variance = mean_and_variance(variant["losses"])
        tolerance = max(LOSS_NOISE_SIGMAS * math.sqrt(base_variance + variance), LOSS_TOLERANCE_SHARE * abs(base_mean))
        variant["loss_check"] = {
            "baseline": baseline["name"],
            "mean_loss": round(mean, 4),
            "baseline_mean_loss": round(base_mean, 4),
            "difference": round(mean - base_mean, 4),
            "tolerance": round(tolerance, 4),
            "matches": bool(variant["finite"]) and abs(mean - base_mean) <= tolerance,
        }
    report["baseline"] = baseline["name"]
    matching = [v for v in ran if v["loss_check"]["matches"]]
    report["fastest_matching"] = max(matching, key=lambda v: v["real_tokens_per_s"])["name"] if matching else None


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
                    [sys.executable, "-m", "caretune.planning.bench", str(run_dir / "spec.json")],
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


def write_results(report: dict, path: Path) -> None:
    """The results so far as JSON (rewritten after every variant, so they survive an interruption)."""
    from caretune.basics.files import AtomicFile

    with AtomicFile(path) as handle:
        handle.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        handle.commit()


def append_table(table: str, path: Path) -> None:
    """Append a results table to a Markdown file."""
    from caretune.basics.files import AtomicFile

    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    with AtomicFile(path) as handle:
        handle.write(previous.rstrip("\n") + "\n\n" + table + "\n")
        handle.commit()


def format_report(report: dict) -> str:
    """A Markdown table of the variants, and which is the fastest whose loss matches the baseline's."""
    lines = [
        f"{report['date']} · {report['device']} · {report['model']} ({report['params'] / 1e9:.2f}B, random "
        f"weights) · LoRA r8 all linear · cutoff {report['cutoff_len']} · padding batch {report['micro_batch']}, "
        f"packing batch {report['pack_batch']} · {report['warmup']} warm-up + {report['steps']} timed steps · "
        f"lengths: {report['profile']}",
        "",
        "| variant | per step | timed steps | real tokens/s | processed tokens/s | non-padding | MFU / HFU | peak memory "
        "| losses | mean loss vs baseline |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for v in report["variants"]:
        shape = f"{v['batch']} x {v['cutoff_len']}" if "batch" in v else ""
        if "skipped" in v or "error" in v:
            outcome = "skipped: " + v["skipped"] if "skipped" in v else "failed: " + v["error"]
            lines.append(f"| {v['name']} | {shape} | {outcome} | | | | | | | |")
            continue
        memory = v["peak_memory_bytes"] or v["peak_rss_bytes"]
        where = "GPU" if v["peak_memory_bytes"] else "RSS"
        if v["peak_memory_bytes"] and v.get("modelled_peak_bytes"):
            where += f" (model: {v['modelled_peak_bytes'] / estimate.GIB:.1f})"
        mfu = f"{v['mfu']:.1%} / {v['hfu']:.1%}" if v["mfu"] is not None else "n/a (CPU)"
        losses = ", ".join(f"{x:.2f}" for x in v["losses"][-3:])
        check = v.get("loss_check")
        versus = (
            f"{check['mean_loss']:.3f} ({check['difference']:+.3f}, within ±{check['tolerance']:.3f}: "
            f"{'yes' if check['matches'] else 'NO'})"
            if check
            else ""
        )
        lines.append(
            f"| {v['name']} | {shape} | {v['timed_steps']} | {v['real_tokens_per_s']:,.0f} | "
            f"{v['processed_tokens_per_s']:,.0f} | {v['non_padding_share']:.1%} | {mfu} | "
            f"{memory / estimate.GIB:.1f} GiB {where} | {losses} | {versus} |"
        )
    if report.get("baseline"):
        lines += ["", f"Baseline: {report['baseline']}; fastest whose mean loss matches it: {report['fastest_matching']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    worker(sys.argv[1])
