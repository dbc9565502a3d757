"""The one source of every recipe under recipes/: LLaMA-Factory YAML per model and task, DeepSpeed JSON.

`caretune recipes` writes them (keeping files a user edited), `caretune recipes --check` lists files that
differ from what this module produces, `caretune recipes new` sizes a folder for another model or GPU count,
and caretune.recipe_folders.rules states the rules any recipe folder keeps, edited or not.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from caretune.constants import GENERAL_DATASET
from caretune.recipe import RECIPES_DIR, RecipeError, names_in
from caretune.recipe_folders.models import DEEPSPEED_DIR, EXTRA_TRAININGS, MAX_GPUS, MODELS, QWEN3_8B, TASKS, ModelRecipe
from caretune.recipe_folders.render import (
    MEASURED_PACKS_PER_DEVICE,
    deepspeed_configs,
    folder_readme,
    recipes_readme,
    render_yaml,
    target_effective_batch,
)
from caretune.recipe_folders.tasks import TASK_BUILDERS, TRAIN_DATASETS, lora_sft
from caretune.thinking import template_for


def generated_files() -> dict[str, str]:
    """Every generated file: repository-relative path -> content."""
    files = {}
    for recipe in MODELS:
        for task in TASKS:
            files[recipe.path(task)] = render_yaml(f"{recipe.folder} {task}", TASK_BUILDERS[task](recipe))
        files[f"{RECIPES_DIR}/{recipe.folder}/README.md"] = folder_readme(
            recipe, tuple(extra for extra in EXTRA_TRAININGS if extra.folder == recipe.folder)
        )
    for extra in EXTRA_TRAININGS:
        files[extra.path(extra.train_task)] = render_yaml(f"{extra.folder} {extra.train_task}", lora_sft(extra))
    for name, config in deepspeed_configs().items():
        files[f"{DEEPSPEED_DIR}/{name}"] = config
    files[f"{RECIPES_DIR}/README.md"] = recipes_readme()
    return files


def write_recipes(root: str | Path = ".", overwrite: bool = False) -> tuple[list[str], list[str]]:
    """Write the generated files under `root`: missing ones always, edited ones only with `overwrite`.
    Returns (paths written, edited paths left as they are)."""
    from caretune.basics.files import AtomicFile

    written, kept = [], []
    for relative, content in generated_files().items():
        path = Path(root) / relative
        if path.exists():
            if path.read_text(encoding="utf-8") == content:
                continue
            if not overwrite:
                kept.append(relative)
                continue
        with AtomicFile(path) as out:
            out.write(content)
            out.commit()
        written.append(relative)
    return written, kept


def drift(root: str | Path = ".") -> list[str]:
    """Generated files whose committed copy is missing or differs."""
    return [
        relative
        for relative, content in generated_files().items()
        if not (Path(root) / relative).exists() or (Path(root) / relative).read_text(encoding="utf-8") != content
    ]


def sized_layout(recipe_path: str) -> tuple[int, int] | None:
    """(GPUs per node, nodes) a shipped recipe (any copy of the recipes/ tree) is sized for; None for any other file."""
    parts = Path(recipe_path).resolve().parts
    for recipe in MODELS + EXTRA_TRAININGS:
        for task in (*TASKS, recipe.train_task):
            if parts[-3:] == Path(recipe.path(task)).parts:
                return recipe.gpus, recipe.nodes
    return None


DEEPSPEED_BY_MEMORY = ((2, False, "ds_z2.json"), (3, False, "ds_z3.json"), (3, True, "ds_z3_offload.json"))


def sized_recipe(folder: str, model: str, gpus: int, gpu_name: str, template: str | None = None, nodes: int = 1) -> ModelRecipe:
    """The Qwen3-8B default recipe resized for another model and `nodes` x `gpus` GPUs by `caretune plan`'s memory
    model, by one rule at every GPU count (all GPUs counted, at most MAX_GPUS): the cheapest ZeRO stage that fits
    one pack; per device, the most packs that fit, at most the measured best (4) and at most the default's packs
    per step / GPUs (at least 1); then the accumulation that reaches the default's packs per step (rounded up).
    Past 16 GPUs a step holds one pack per GPU. `template` None chooses by model (caretune.thinking.template_for)."""
    template = template or template_for(model)
    if template is None:
        raise RecipeError(f"{model} does not look like a Qwen3 model: pass --template (LLaMA-Factory's name)")
    from caretune.planning import estimate
    from caretune.planning.plan import largest_micro_batch, resolve_arch

    world = nodes * gpus
    if world > MAX_GPUS:
        raise RecipeError(
            f"--nodes {nodes} x --gpus {gpus} = {world} GPUs, more than {MAX_GPUS}: past 16 a step already holds "
            "one pack per GPU; size for fewer GPUs"
        )
    arch, _ = resolve_arch(model)
    gpu = estimate.GPUS[gpu_name]
    limit = int(gpu.memory_gib * estimate.GIB * estimate.MEMORY_HEADROOM)
    target = target_effective_batch()
    for zero_stage, offload, config in DEEPSPEED_BY_MEMORY:
        memory = {"gpus": world, "lora_rank": 8, "zero_stage": zero_stage, "offload": offload, "fused_cross_entropy": True}
        fits = largest_micro_batch(arch, QWEN3_8B.cutoff_len, limit, memory)
        if fits:
            break
    else:
        raise RecipeError(
            f"{model}: not even one {QWEN3_8B.cutoff_len}-token pack fits in {gpu.memory_gib:g} GiB "
            f"per {gpu_name} with ZeRO-3 and CPU offload"
        )
    micro = max(1, min(fits, MEASURED_PACKS_PER_DEVICE, target // world))
    accumulation = max(1, -(-target // (micro * world)))
    deepspeed = f"{DEEPSPEED_DIR}/{config}" if world > 1 or zero_stage > 2 else None
    return replace(
        QWEN3_8B,
        folder=folder,
        model=model,
        gpus=gpus,
        nodes=nodes,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        deepspeed=deepspeed,
        template=template,
    )


def folder_files(recipe: ModelRecipe) -> dict[str, str]:
    """The four recipes and the README of one model folder: file name -> content."""
    files = {f"{task}.yaml": render_yaml(f"{recipe.folder} {task}", TASK_BUILDERS[task](recipe)) for task in TASKS}
    files["README.md"] = folder_readme(recipe)
    return files


def write_new_folder(recipe: ModelRecipe, out: Path, overwrite: bool = False) -> list[str]:
    """Write a model folder; an existing recipe there is replaced only with `overwrite`."""
    from caretune.basics.files import AtomicFile

    files = folder_files(recipe)
    existing = [name for name in files if (out / name).exists()]
    if existing and not overwrite:
        raise RecipeError(f"{out}: {', '.join(existing)} already exist; pass --overwrite to replace them")
    for name, content in files.items():
        with AtomicFile(out / name) as handle:
            handle.write(content)
            handle.commit()
    return [str(out / name) for name in files]


MAX_GENERAL_SHARE = 0.5


def mixed_in(recipe: ModelRecipe, general_share: float, registry: str | Path) -> ModelRecipe:
    """`recipe` with the general set mixed in at `general_share` of an epoch's training rows (one per trained answer):
    interleave_over's probabilities, the medical sets' in proportion to the training rows their conversions wrote
    (read from their reports)."""

    from caretune.basics.registry import load_registry
    from caretune.prep.mixing import mix_shares, training_rows
    from converters.outputs import REPORT_SUFFIX

    if not 0 < general_share <= MAX_GENERAL_SHARE:
        raise RecipeError(f"--general-share {general_share:g}: expected more than 0 and at most {MAX_GENERAL_SHARE:g}")
    entries = load_registry(registry) if Path(registry).exists() else {}
    rows = []
    for name in names_in(TRAIN_DATASETS):
        file_name = entries.get(name, {}).get("file_name") if isinstance(entries.get(name), dict) else None
        report = (Path(registry).parent / file_name).with_name(Path(file_name).stem + REPORT_SUFFIX) if file_name else None
        if report is None or not report.is_file():
            raise RecipeError(
                f"--general-share needs the medical sets' row counts: convert {name} first (its report is missing), "
                f"and {GENERAL_DATASET} with `caretune convert general`"
            )
        rows.append(training_rows(json.loads(report.read_text(encoding="utf-8"))))
    if GENERAL_DATASET not in entries:
        raise RecipeError(
            f"--general-share: {GENERAL_DATASET} is not registered in {registry}: run `caretune convert general` first"
        )
    return replace(recipe, general_share=general_share, mix=mix_shares(rows, general_share))
