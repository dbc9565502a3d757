"""`caretune preflight RECIPE`: catch, before a GPU minute is spent, what LLaMA-Factory would reject
late or get silently wrong. Every problem is one line naming the recipe, the key and the fix."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from caretune import lf
from caretune.constants import RESULT_FILES
from caretune.recipe import load_recipe
from caretune.training.recipe_checks import (
    PreflightError,
    check_checkpointing,
    check_deepspeed,
    check_fast_paths,
    check_fitted_datasets,
    check_keys,
    check_mix,
    check_model_paths,
    check_reference_model,
    check_registered_datasets,
    check_reporters,
    check_siblings,
    check_stage_data,
    check_thinking,
    check_values,
)
from caretune.training.runs import last_checkpoint, live_run

FINISHED_MARKERS = RESULT_FILES


@dataclass
class Launch:
    """What `caretune train` will launch."""

    recipe: Path
    args: dict
    processes: int  # per node
    nodes: int = 1
    overrides: dict = field(default_factory=dict)  # key=value passed to llamafactory-cli after the YAML
    ray_spec: Path | None = None  # set for `caretune train --ray`: the Ray Train driver's spec file
    move_aside: tuple[Path, Path] | None = None  # (old output_dir, where it goes) before training
    notes: list[str] = field(default_factory=list)


def ray_requested(env: dict | None = None) -> bool:
    """USE_RAY=1 asks LLaMA-Factory to launch Ray workers instead of torchrun."""
    return (env if env is not None else os.environ).get("USE_RAY", "").lower() in ("1", "true", "y", "yes")


def check_ray(path: Path, args: dict) -> None:
    """USE_RAY=1 (LLaMA-Factory's own Ray launcher) needs the ray package and, per device, the 10 CPUs its
    placement group asks for; without them it would wait forever."""
    import importlib.util

    if not ray_requested():
        return
    if importlib.util.find_spec("ray") is None:
        raise PreflightError(
            f"{path}: USE_RAY=1 but Ray is not installed; pip install 'caretune[ray]' or unset USE_RAY to launch with torchrun"
        )
    from caretune.training.ray_train import RayError, check_llamafactory_ray

    try:
        check_llamafactory_ray(args, use_gpu=visible_gpu_count() > 0)
    except RayError as err:
        raise PreflightError(f"{path}: {err}") from None


def check_processes(path: Path, processes: int, visible_gpus: int) -> None:
    """No more processes than visible GPUs (a machine without GPUs runs them on CPU)."""
    if visible_gpus and processes > visible_gpus:
        raise PreflightError(
            f"{path}: {processes} GPUs requested but {visible_gpus} visible; use GPUS={visible_gpus} or fix CUDA_VISIBLE_DEVICES"
        )


def first_node(env: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether this is the first node of a run (NODE_RANK 0, or unset): every node trains into one output_dir, and the
    first one alone holds it and records the run."""
    return env.get("NODE_RANK", "0") == "0"


def finished(output_dir: Path) -> bool:
    """Whether a run folder holds a finished training (LLaMA-Factory's final files)."""
    return any((output_dir / marker).exists() for marker in FINISHED_MARKERS)


def place_output(path: Path, args: dict, launch: Launch, *, overwrite: bool, fresh: bool) -> None:
    """Refuse a finished run, resume an unfinished one; moving an old run aside, never deleting it."""
    if not args.get("do_train"):
        return
    output_dir = Path(args.get("output_dir", ""))
    if first_node() and (manifest := live_run(output_dir)):  # other nodes share the run
        raise PreflightError(
            f"{path}: output_dir {output_dir} is being trained now (process {manifest['pid']}, started "
            f"{manifest.get('started')}); wait for it to end, or stop it, then run again"
        )
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if finished(output_dir) and not overwrite:
        raise PreflightError(
            f"{path}: output_dir {output_dir} holds a finished run; pass --overwrite to train "
            "again (the old run is moved aside, not deleted) or change output_dir"
        )
    if finished(output_dir) or fresh:
        aside = output_dir.with_name(f"{output_dir.name}.old-{int(os.path.getmtime(output_dir))}")
        launch.move_aside = (output_dir, aside)
        launch.notes.append(f"the previous run in {output_dir} will be moved to {aside}")
        return
    checkpoint = last_checkpoint(output_dir)
    if checkpoint is None:
        raise PreflightError(
            f"{path}: output_dir {output_dir} is not empty but holds no checkpoint; pass --fresh to move it aside and start over"
        )
    launch.overrides["resume_from_checkpoint"] = str(checkpoint)
    launch.notes.append(f"resuming the unfinished run from {checkpoint} (--fresh starts over)")


def visible_gpu_count() -> int:
    """CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def node_count(nodes: int | None, env: dict | None = None) -> int:
    """The nodes of a run: --nodes, else NNODES, else 1; refused when the two disagree."""
    declared = (os.environ if env is None else env).get("NNODES")
    if declared is not None and not declared.isdigit():
        raise PreflightError(f"NNODES={declared!r} is not a number of nodes")
    if nodes and declared and int(declared) != nodes:
        raise PreflightError(f"--nodes {nodes} but NNODES={declared}: say one, or the same")
    return nodes or int(declared or 1)


def preflight(
    recipe: str | os.PathLike,
    *,
    processes: int | None = None,
    nodes: int | None = None,
    overwrite: bool = False,
    fresh: bool = False,
    allow_thinking: bool = False,
) -> Launch:
    """Check a recipe; return what `caretune train` launches. Every check runs; a PreflightError lists all the problems found
    (numbered when there are several)."""
    path = Path(recipe)
    args = load_recipe(path)
    problems: list[str] = []

    def attempt(check, *check_args, **options):
        try:
            return check(*check_args, **options)
        except PreflightError as err:
            problems.append(str(err))
            return None

    attempt(check_keys, path, args, lf.known_keys())
    attempt(check_values, path, args, lf.field_types())
    attempt(check_registered_datasets, path, args)
    attempt(check_fitted_datasets, path, args)
    mix_warnings = attempt(check_mix, path, args) or []
    recipe_warnings = attempt(check_siblings, path, args) or []
    recipe_warnings += attempt(check_thinking, path, args, allow_thinking) or []
    recipe_warnings += check_checkpointing(path, args)
    attempt(check_stage_data, path, args)
    attempt(check_model_paths, path, args)
    attempt(check_reference_model, path, args, attempt(check_deepspeed, path, args))
    fast_path_notes = attempt(check_fast_paths, path, args) or []
    attempt(check_reporters, path, args)
    attempt(check_ray, path, args)
    visible = visible_gpu_count()
    processes = processes or max(visible, 1)
    attempt(check_processes, path, processes, visible)
    launch = Launch(recipe=path, args=args, processes=processes, nodes=attempt(node_count, nodes) or 1)
    attempt(place_output, path, args, launch, overwrite=overwrite, fresh=fresh)
    if len(problems) == 1:
        raise PreflightError(problems[0])
    if problems:
        listed = "\n".join(f"  {number}. {problem}" for number, problem in enumerate(problems, start=1))
        raise PreflightError(f"{path}: {len(problems)} problems\n{listed}")
    launch.notes.extend(fast_path_notes + recipe_warnings + mix_warnings)
    if not visible:
        launch.notes.append(
            f"no GPU visible: training runs on CPU in {processes} process(es) (fine for tiny-qwen3, not for Qwen3-8B)"
        )
    return launch
