"""The rules a recipe folder keeps, edited or not: valid YAML, one prompt per folder (template and thinking mode),
registered datasets, existing DeepSpeed configs, adapters that the folder's training recipes train (stacked in order),
`gradient_checkpointing` as it happens, and effective-batch comments whose arithmetic holds. `caretune recipes --check`
(so `make lint`) and the tests call them, and preflight applies the one-prompt, thinking, history and checkpointing
rules to the recipe it checks; each problem names its file."""

from __future__ import annotations

import re
from pathlib import Path

from caretune.constants import DATASET_INFO
from caretune.recipe import RECIPES_DIR, RecipeError, checkpointing_problem, disagreements, load_recipe, names_in
from caretune.thinking import history_problem, thinking_problems

_EFFECTIVE_BATCH = re.compile(
    r"effective batch = (\d+) x (\d+) (?:GPUs|process) x (\d+) = (\d+)"
    r"(?: packs of up to (\d+) tokens \(([\d,]+) tokens\))?"
)


def recipe_problems(where: str, text: str, args: dict, root: Path, registered: set[str] | None) -> list[str]:
    """The rules one recipe keeps on its own."""
    problems = []
    for key in ("dataset", "eval_dataset"):
        unknown = [name for name in names_in(args.get(key)) if registered is not None and name not in registered]
        if unknown:
            problems.append(
                f"{where}: {key} names {', '.join(unknown)}, not registered in {DATASET_INFO} "
                "(caretune convert registers its outputs)"
            )
    if args.get("deepspeed") and not (root / str(args["deepspeed"])).exists():
        problems.append(f"{where}: deepspeed config {args['deepspeed']} does not exist")
    problems += _arithmetic_problems(where, text, args)
    problems += [f"{where}: {problem}" for problem in thinking_problems(args)]
    for problem in (history_problem(args), checkpointing_problem(args)):
        if problem is not None:
            problems.append(f"{where}: {problem}")
    return problems


def folder_problems(folder: Path, root: Path, registered: set[str] | None) -> list[str]:
    """What breaks the rules in one recipe folder."""
    problems, loaded = [], {}
    for path in sorted(folder.glob("*.yaml")):
        where = path.relative_to(root).as_posix()
        try:
            args = load_recipe(path)
        except RecipeError as err:
            problems.append(str(err).replace(str(path), where, 1))
            continue
        loaded[where] = args
        problems += recipe_problems(where, path.read_text(encoding="utf-8"), args, root, registered)
    for key, values in disagreements(loaded):
        shown = ", ".join(f"{Path(where).name}: {value}" for where, value in values.items())
        problems.append(
            f"{folder.relative_to(root).as_posix()}: {key} differs between recipes ({shown}); training, "
            "evaluation and chat must render the same prompt"
        )
    return problems + _adapter_problems(loaded)


def _adapter_problems(loaded: dict[str, dict]) -> list[str]:
    """Every adapter a recipe loads is one a training recipe of the folder trains, and an adapter trained on top of
    others (DPO on SFT's) is named after them, in their order: LLaMA-Factory merges adapters in the order given."""
    trained = {args.get("output_dir"): Path(where).name for where, args in loaded.items() if args.get("do_train")}
    starts = {
        args.get("output_dir"): names_in(args.get("adapter_name_or_path")) for args in loaded.values() if args.get("do_train")
    }
    problems = []
    for where, args in loaded.items():
        adapters = names_in(args.get("adapter_name_or_path"))
        for position, adapter in enumerate(adapters):
            if trained and adapter not in trained:
                shown = ", ".join(f"{name}: {output}" for output, name in trained.items())
                problems.append(f"{where}: adapter_name_or_path {adapter} is not what a training recipe here trains ({shown})")
            elif starts.get(adapter) and adapters[:position] != starts[adapter]:
                problems.append(
                    f"{where}: adapter {adapter} was trained on top of {','.join(starts[adapter])}; name them first: "
                    f"adapter_name_or_path: {','.join([*starts[adapter], adapter])}"
                )
    return problems


def _arithmetic_problems(where: str, text: str, args: dict) -> list[str]:
    """The derived numbers in the `effective batch = …` comment must follow from the keys."""
    found = _EFFECTIVE_BATCH.search(text)
    if not found:
        return []
    micro, devices, accumulation, total, pack_tokens, tokens = found.groups()
    problems = []
    if int(micro) != args.get("per_device_train_batch_size") or int(accumulation) != args.get("gradient_accumulation_steps"):
        problems.append(
            f"{where}: the comment says effective batch = {micro} x {devices} x {accumulation} but "
            f"per_device_train_batch_size is {args.get('per_device_train_batch_size')} and "
            f"gradient_accumulation_steps is {args.get('gradient_accumulation_steps')}: update the comment"
        )
    if int(micro) * int(devices) * int(accumulation) != int(total):
        problems.append(f"{where}: the comment's effective batch {micro} x {devices} x {accumulation} is not {total}")
    if pack_tokens and (
        int(pack_tokens) != args.get("cutoff_len") or int(total) * int(pack_tokens) != int(tokens.replace(",", ""))
    ):
        problems.append(
            f"{where}: the comment's packs of up to {pack_tokens} tokens ({tokens} tokens) do not follow "
            f"from cutoff_len {args.get('cutoff_len')} and the effective batch {total}"
        )
    return problems


def invariant_problems(root: str | Path = ".") -> list[str]:
    """The rules every recipe folder under `root`/recipes keeps, whatever was edited. Empty when all hold."""
    from caretune.basics.registry import load_registry

    root = Path(root)
    registry_path = root / DATASET_INFO
    registered = set(load_registry(registry_path)) if registry_path.exists() else None
    return [
        problem
        for folder in sorted(p for p in (root / RECIPES_DIR).iterdir() if p.is_dir())
        for problem in folder_problems(folder, root, registered)
    ]
