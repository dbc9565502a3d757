"""`caretune bench`'s child: one variant in a fresh process, LLaMA-Factory's trainer with counters on its collator and
step ends; the figures go to the spec's result file.

    python -m caretune.planning.bench_worker SPEC.json
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from caretune.planning import estimate

SEED = 20261125  # the random weights and the synthetic rows: the same in every variant


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


if __name__ == "__main__":
    worker(sys.argv[1])
