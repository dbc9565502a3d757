"""`caretune train`: preflight, then LLaMA-Factory's own launcher (torchrun / DeepSpeed / multi-node)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from caretune.lf import cli_command
from caretune.preflight import Plan, ray_requested

# Passed through to LLaMA-Factory's torchrun launcher for multi-node runs (and Ray).
LAUNCH_ENV = ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "USE_RAY", "RAY_NUM_WORKERS")


def launch_env(plan: Plan, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `llamafactory-cli train`: torchrun whenever DeepSpeed, several processes or nodes,
    unless USE_RAY=1 hands the launch to Ray."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)  # torchrun lives beside this interpreter
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    multi_node = int(env.get("NNODES", "1")) > 1
    if ray_requested(env):
        return env  # LLaMA-Factory starts `ray_num_workers` Ray workers itself; torchrun would bypass Ray
    if plan.processes > 1 or plan.args.get("deepspeed") or multi_node:
        env["FORCE_TORCHRUN"] = "1"
        env["NPROC_PER_NODE"] = str(plan.processes)
    return env


def command(plan: Plan) -> list[str]:
    return [*cli_command(), "train", str(plan.recipe), *(f"{key}={value}" for key, value in plan.overrides.items())]


def run(plan: Plan) -> int:
    """Launch training; return LLaMA-Factory's exit code."""
    if plan.move_aside is not None:
        old, aside = plan.move_aside
        old.rename(aside)
    return subprocess.call(command(plan), env=launch_env(plan))
