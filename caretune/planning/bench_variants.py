"""`caretune bench`'s variants: padding or neat packing, Liger, attention, activation memory, one long pack, and
torch.compile; which this machine can run, and which a command asks for."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from caretune.basics.errors import UserError

FLASH_ATTN_NOTE = "CARETUNE_GPU_KIT_MANIFEST"  # set by gpu_check.sh: the kit.json that says why flash-attn is absent
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
