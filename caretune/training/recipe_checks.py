"""Each check of a recipe that `caretune preflight` runs: keys and values against LLaMA-Factory's own argument
dataclasses, datasets, the preference stage's data and reference model, mixes, sibling recipes, DeepSpeed, fast
paths, reporters, model paths, thinking and gradient checkpointing. Each raises PreflightError with one line naming
the recipe, the key and the fix, or returns warnings (thinking's history rule, checkpointing)."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from pathlib import Path

from caretune import lf
from caretune.basics.registry import RegistryError, load_registry
from caretune.constants import DATASET_INFO, TEMPLATE
from caretune.recipe import RecipeError, checkpointing_problem, disagreements, load_recipe, names_in
from caretune.thinking import history_problem, thinking_problems


class PreflightError(RecipeError):
    """The recipe cannot run as written; the message says where and how to fix it."""


def _fits(value: object, hint: object) -> tuple[bool, str]:
    """Does a YAML value fit a declared type (caretune.lf.field_types, read from the dataclasses)? (fits, what was
    expected). LLaMA-Factory hands a recipe's values to its dataclasses unchecked (HfArgumentParser.parse_dict), so
    a wrong type would fail only where the value is first used, after the model has loaded."""
    import enum
    import types
    import typing

    origin, members = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_fits(value, member) for member in members]
        return any(ok for ok, _ in results), " or ".join(what for _, what in results)
    if origin is typing.Literal:
        return value in members, "one of " + ", ".join(map(str, members))
    if hint is type(None):
        return value is None, "null"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [member.value for member in hint]
        return value in choices, "one of " + ", ".join(map(str, choices))
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if hint is float:
        if isinstance(value, str):  # the parser converts strings such as "1e-4"
            try:
                float(value)
                return True, "a number"
            except ValueError:
                return False, "a number"
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if hint is str:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool), "text"
    return True, ""  # dicts, lists and other types: left to LLaMA-Factory


def check_values(path: Path, args: dict, types: dict[str, object]) -> None:
    """Each value has its key's declared type or one of its choices (LLaMA-Factory would fail after loading)."""
    for key, value in args.items():
        if key in types:
            ok, expected = _fits(value, types[key])
            if not ok:
                raise PreflightError(f"{path}: {key} must be {expected}, not {value!r}")


def check_keys(path: Path, args: dict, known: set[str]) -> None:
    """Every key is one LLaMA-Factory knows; an unknown one is named with the closest known key."""
    for key in args:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "remove it or check LLaMA-Factory's docs"
            raise PreflightError(f"{path}: unknown key '{key}' ({hint})")


def check_registered_datasets(path: Path, args: dict) -> None:
    """Every dataset the recipe names is registered in its dataset_dir and has rows."""
    dataset_dir = Path(args.get("dataset_dir", "data"))
    registry_path = dataset_dir / DATASET_INFO
    names = [("dataset", n) for n in names_in(args.get("dataset"))] + [
        ("eval_dataset", n) for n in names_in(args.get("eval_dataset"))
    ]
    if not names:
        return
    if not registry_path.is_file():
        raise PreflightError(
            f"{path}: dataset_dir '{dataset_dir}' has no {DATASET_INFO}; convert the data first (caretune convert ...)"
        )
    registry = load_registry(registry_path)  # a broken registry is a RegistryError naming its line
    for key, name in names:
        entry = registry.get(name)
        if entry is None:
            raise PreflightError(
                f"{path}: {key} '{name}' is not registered in {registry_path}; "
                "convert it first (caretune convert ...) or fix the name"
            )
        if not isinstance(entry, dict):
            raise PreflightError(f"{registry_path}: entry '{name}' is not an object; convert the data again")
        if "file_name" not in entry:
            continue  # a hub dataset: LLaMA-Factory downloads it
        data_file = dataset_dir / entry["file_name"]
        if not data_file.exists():
            raise PreflightError(
                f"{path}: {key} '{name}' points at {data_file}, which does not exist; "
                "run the conversion (make demo converts the sample)"
            )
        if data_file.is_file() and _is_empty_dataset(data_file):
            raise PreflightError(f"{path}: {key} '{name}' file {data_file} has no rows")


def check_fitted_datasets(path: Path, args: dict) -> None:
    """No training row (or preference pair) is longer than the cutoff LLaMA-Factory applies (SFT truncation keeps the
    newest turns and cuts older ones part-way, the system prompt first; the pairwise processor cuts the prompt from its
    end, the question first). A dataset whose conversion fitted it within the cutoff passes
    at once; any other is measured with LLaMA-Factory's own encoding (the token-length cache `check` and `plan`
    share)."""
    import tempfile

    from caretune.prep.lengths import LengthRequest, TokenizerSource, turn_lengths
    from caretune.prep.mixing import fitted_within

    stage = args.get("stage", "sft")
    if stage not in ("sft", "dpo") or args.get("do_train") is False:
        return
    try:
        cutoff_len = lf.effective_cutoff_len(args)
    except (TypeError, ValueError):
        return  # check_values names a bad cutoff_len
    dataset_dir = str(args.get("dataset_dir", "data"))
    # a conversion fits rows as the shipped recipes encode them: the qwen3 template, non-thinking, mask_history
    as_fitted = (
        (args.get("template") or TEMPLATE) == TEMPLATE
        and args.get("enable_thinking") is False
        and (args.get("mask_history") is True or stage == "dpo")  # pairs encode their prompt as served either way
        and not args.get("preserve_thinking")
    )
    names = [n for n in names_in(args.get("dataset")) if not (as_fitted and fitted_within(dataset_dir, n, cutoff_len))]
    if not names:
        return
    try:
        registry = load_registry(Path(dataset_dir) / DATASET_INFO)
    except (RegistryError, OSError):
        return  # check_registered_datasets names the problem
    names = [
        n for n in names if isinstance(registry.get(n), dict) and (Path(dataset_dir) / str(registry[n].get("file_name"))).is_file()
    ]
    if not names:
        return
    tokenizer = TokenizerSource(args.get("model_name_or_path"))
    defaults = lf.field_defaults()
    options = {key: args.get(key, defaults[key]) for key in ("enable_thinking", "mask_history")}
    request = LengthRequest(args.get("template") or TEMPLATE, **options)
    with tempfile.TemporaryDirectory() as scratch, open(os.devnull, "w") as quiet:
        for name in names:
            try:
                with contextlib.redirect_stderr(quiet):  # datasets' progress bars: preflight says one line or nothing
                    data = turn_lengths(name, dataset_dir, tokenizer, scratch, request)
            except Exception:  # noqa: BLE001 (LLaMA-Factory's own load error is check_registered_datasets' and check's)
                continue
            lengths = data.lengths(1 << 30, bool(options["mask_history"]), bool(args.get("preserve_thinking")))
            long_rows = sum(1 for length in lengths if length > cutoff_len)
            if long_rows and data.ranking:
                raise PreflightError(
                    f"{path}: {long_rows} pair(s) of dataset '{name}' are longer than cutoff_len {cutoff_len}; "
                    "LLaMA-Factory would cut their prompt from its end, the question first: convert them again with "
                    f"--cutoff-len {cutoff_len} (caretune prefs build fits its pairs to the recipe's cutoff)"
                )
            if long_rows:
                raise PreflightError(
                    f"{path}: {long_rows} row(s) of dataset '{name}' are longer than cutoff_len {cutoff_len} (as "
                    "LLaMA-Factory applies it); it would cut them mid-turn and drop their system prompt first: "
                    f"convert the data again with --cutoff-len {cutoff_len}, which drops their oldest whole turns"
                )


PREFERENCE_DATA_STAGES = ("rm", "dpo")  # LLaMA-Factory loads ranking data for these (dpo through its rm path)
REFERENCE_STAGES = ("dpo", "kto")  # stages with a reference model, unless the loss needs none
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


def check_stage_data(path: Path, args: dict) -> None:
    """Ranking (preference) data for a stage that takes it, and only then: LLaMA-Factory refuses the mismatch only
    after loading the model, with "The dataset is not applicable in the current training stage"."""
    stage = args.get("stage", "sft")
    dataset_dir = Path(args.get("dataset_dir", "data"))
    try:
        registry = load_registry(dataset_dir / DATASET_INFO)
    except (RegistryError, OSError):
        return  # check_registered_datasets names the problem
    for key in ("dataset", "eval_dataset"):
        for name in names_in(args.get(key)):
            entry = registry.get(name)
            if not isinstance(entry, dict):
                continue
            ranking = bool(entry.get("ranking"))
            if ranking and stage not in PREFERENCE_DATA_STAGES:
                raise PreflightError(
                    f"{path}: {key} '{name}' holds preference pairs (ranking: true), which stage: {stage} cannot train "
                    "on; use it with stage: dpo (recipes/<model>/dpo.yaml)"
                )
            if not ranking and stage in PREFERENCE_DATA_STAGES:
                raise PreflightError(
                    f"{path}: {key} '{name}' holds single answers, not preference pairs; stage: {stage} needs a ranking "
                    "set (caretune convert prefs, or caretune prefs build)"
                )
            if stage == "kto" and "kto_tag" not in (entry.get("columns") or {}):
                raise PreflightError(f"{path}: {key} '{name}' has no kto_tag column, which stage: kto needs")


def check_reference_model(path: Path, args: dict, deepspeed: dict | None) -> None:
    """A DPO or KTO run that starts from an SFT LoRA adapter must compare against the SFT model. LLaMA-Factory's LoRA
    reference is the policy with its adapters off: if it resumes the SFT adapter (no create_new_adapter), or cannot
    merge it (ZeRO-3, a quantized model), the reference silently becomes the pre-SFT base."""
    stage = args.get("stage", "sft")
    adapters = names_in(args.get("adapter_name_or_path"))
    if (
        stage not in REFERENCE_STAGES
        or not args.get("do_train")
        or not adapters
        or (stage == "dpo" and args.get("pref_loss", "sigmoid") in REFERENCE_FREE_LOSSES)
        or args.get("finetuning_type", "lora") != "lora"
        or args.get("ref_model")
    ):
        return
    fixes = "set create_new_adapter: true, or ref_model with ref_model_adapters, or train from a merged SFT export"
    if not args.get("create_new_adapter"):
        raise PreflightError(
            f"{path}: stage: {stage} starts from adapter_name_or_path {adapters[-1]} without create_new_adapter, so "
            "LLaMA-Factory resumes that adapter and its reference model (the adapters switched off) is the pre-SFT base, "
            f"not the SFT model; {fixes}"
        )
    unmergeable = (
        "DeepSpeed ZeRO-3" if zero_settings(deepspeed)[0] == 3 else "quantization_bit" if args.get("quantization_bit") else ""
    )
    if unmergeable:
        raise PreflightError(
            f"{path}: stage: {stage} with {unmergeable} cannot merge adapter_name_or_path {adapters[-1]}, so LLaMA-Factory "
            "resumes it and the reference model becomes the pre-SFT base; use ZeRO-2 (recipes/deepspeed/ds_z2.json), or "
            "ref_model with ref_model_adapters, or train from a merged SFT export"
        )


def check_mix(path: Path, args: dict) -> list[str]:
    """A warning, naming the sets, when interleave_probs no longer match the datasets' training rows (a new
    conversion changed them since the recipe was written)."""
    from caretune.prep.mixing import stale_mix

    if not str(args.get("mix_strategy", "")).startswith("interleave") or not args.get("interleave_probs"):
        return []
    try:
        probs = tuple(float(p) for p in str(args["interleave_probs"]).split(","))
    except ValueError:
        return []  # LLaMA-Factory names a malformed value itself
    reason = stale_mix(args.get("dataset_dir", "data"), names_in(args.get("dataset")), probs)
    return [f"warning: {path}: {reason}"] if reason else []


def _is_empty_dataset(data_file: Path) -> bool:
    with open(data_file, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return not head or head.replace(b" ", b"").replace(b"\n", b"").startswith(b"[]")


def check_siblings(path: Path, args: dict) -> list[str]:
    """template / enable_thinking must agree across a folder's recipes: a mismatch leaks <think> after deployment.
    Returns warnings: a sibling that does not load is named and skipped (the recipe given is what runs)."""
    warnings = []
    for sibling in sorted(path.parent.glob("*.yaml")):
        if sibling.resolve() == path.resolve():
            continue
        try:
            other = load_recipe(sibling)
        except RecipeError as err:
            warnings.append(f"warning: {err} (skipped in the template check)")
            continue
        if found := disagreements({path: args, sibling: other}):
            key, values = found[0]
            mine, theirs = values[path], values[sibling]
            raise PreflightError(
                f"{path}: {key} is {mine!r} but {sibling} has {theirs!r}; use the same in every "
                "recipe of the folder (a template mismatch leaks <think> blocks after deployment)"
            )
    return warnings


def check_deepspeed(path: Path, args: dict) -> dict | None:
    """The recipe's DeepSpeed config parsed (None without one); a missing or broken file is an error."""
    ds_path = args.get("deepspeed")
    if not ds_path:
        return None
    ds_file = Path(ds_path)
    if not ds_file.is_file():
        raise PreflightError(f"{path}: deepspeed file '{ds_path}' does not exist (see recipes/deepspeed/)")
    try:
        config = json.loads(ds_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PreflightError(f"{ds_file}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(config, dict) or "zero_optimization" not in config:
        raise PreflightError(f"{ds_file}: no zero_optimization section; start from recipes/deepspeed/ds_z2.json")
    stage = config["zero_optimization"].get("stage")
    if stage == 3 and args.get("predict_with_generate"):
        raise PreflightError(
            f"{path}: predict_with_generate does not work with DeepSpeed ZeRO-3 ({ds_path}); "
            "use ds_z2.json or drop deepspeed for prediction"
        )
    return config


def zero_settings(config: dict | None) -> tuple[int, bool]:
    """The ZeRO stage of a DeepSpeed config (0 without one) and whether it offloads anything to the CPU."""
    zero = config["zero_optimization"] if config else {}
    return int(zero.get("stage", 0)), bool(zero.get("offload_param") or zero.get("offload_optimizer"))


def check_fast_paths(path: Path, args: dict) -> list[str]:
    """Liger, FlashAttention-2 and neat packing: what would fail after the model loads. Returns notes."""
    import importlib.util

    notes = []
    if args.get("enable_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:
        raise PreflightError(
            f"{path}: enable_liger_kernel needs the liger-kernel package on a CUDA machine "
            "(pip install -e '.[gpu]'), or set enable_liger_kernel: false"
        )
    fa2 = args.get("flash_attn") == "fa2"
    if args.get("neat_packing") and fa2 and int(args.get("per_device_train_batch_size", 1)) != 1:
        raise PreflightError(
            f"{path}: neat_packing with flash_attn: fa2 takes per_device_train_batch_size: 1 in "
            "LLaMA-Factory (it stops at the first batch otherwise); raise gradient_accumulation_steps"
        )
    if fa2 and importlib.util.find_spec("flash_attn") is None:
        notes.append("flash-attn is not installed: LLaMA-Factory falls back to sdpa (correct, slower; pip install flash-attn)")
    return notes


# `report_to` integrations and the modules the Hugging Face Trainer imports for them
REPORTERS = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "swanlab": ("swanlab",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "trackio": ("trackio",),
}


def check_reporters(path: Path, args: dict) -> None:
    """Each `report_to` integration is importable: the Trainer fails on a missing one only after the model loads."""
    import importlib.util

    for name in names_in(args.get("report_to", "none")):
        modules = REPORTERS.get(name)
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise PreflightError(
                f"{path}: report_to: {name} needs the {modules[0]} package (pip install {modules[0]}), or set report_to: none"
            )


def looks_local(value: str) -> bool:
    """A path on this machine rather than a hub id (`owner/name`)."""
    return value.startswith((".", "/", "~")) or Path(value).exists() or value.count("/") > 1


def offline_without(model: str) -> bool:
    """True when the hub is switched off and `model` (a hub id) has no config.json in the local cache."""
    from caretune.hub import hf_offline

    if not hf_offline():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return not isinstance(try_to_load_from_cache(model, "config.json"), str)
    except ValueError:  # not a valid repo id: LLaMA-Factory reports it
        return False


def check_model_paths(path: Path, args: dict) -> None:
    """The recipe's local model folder and LoRA adapters (a DPO run's SFT adapter among them) exist: LLaMA-Factory would fail on
    them only after loading everything else, with a hub error about the name."""
    model = str(args.get("model_name_or_path") or "")
    if not model:
        raise PreflightError(f"{path}: model_name_or_path is missing")
    if looks_local(model) and not Path(model).expanduser().is_dir():
        raise PreflightError(
            f"{path}: model_name_or_path {model} does not exist"
            + ("; build it with `caretune tiny-model`" if "tiny-qwen3" in model else "")
        )
    if not looks_local(model) and offline_without(model):
        raise PreflightError(
            f"{path}: model_name_or_path {model} is not in the Hugging Face cache and the hub is "
            "off (HF_HUB_OFFLINE); download it where the hub is reachable, or point at a local folder"
        )
    for adapter_dir in names_in(args.get("adapter_name_or_path")):
        if not Path(adapter_dir).expanduser().is_dir():
            raise PreflightError(
                f"{path}: adapter_name_or_path {adapter_dir} does not exist; train it first "
                "(caretune train <the folder's recipe whose output_dir it is>), or use the base model (--base)"
            )


def check_checkpointing(path: Path, args: dict) -> list[str]:
    """A warning where the recipe's `gradient_checkpointing` says other than what training will do."""
    problem = checkpointing_problem(args)
    return [f"warning: {path}: {problem}"] if problem else []


def check_thinking(path: Path, args: dict, allow_thinking: bool) -> list[str]:
    """A hybrid Qwen3 is trained and served in non-thinking mode (caretune.thinking) unless `allow_thinking`;
    returns warnings (multi-turn history rendered unlike served prompts)."""
    problems = thinking_problems(args)
    if problems and not allow_thinking:
        raise PreflightError(f"{path}: {problems[0]}; or pass --allow-thinking to train it in thinking mode")
    history = history_problem(args)
    return [f"warning: {path}: {history}; set mask_history: true"] if history else []
