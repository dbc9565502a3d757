"""caretune's packages: pyproject.toml is the one list, read from caretune's installed metadata (or, in a checkout run
through PYTHONPATH, such as the offline GPU kit's, from the file itself). From it come the packages that training
needs (what the offline GPU kit carries, what a run's manifest records) and those it does not."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from caretune import __version__

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

FLASH_ATTN = "flash-attn"  # optional: LLaMA-Factory's FlashAttention-2 path where a wheel exists
GPU_EXTRA = "gpu"  # caretune's extra of GPU-only packages (pinned with ==; they need nothing beyond PyTorch)
EVALUATION = ("jieba", "nltk", "rouge-chinese")  # BLEU/ROUGE of `caretune eval`
NOT_FOR_TRAINING = {
    **dict.fromkeys(EVALUATION, "BLEU/ROUGE of caretune eval"),
    "matplotlib": "report and data-card plots",
    "fastapi": "the API",
    "uvicorn": "the API",
    "openai": "caretune judge's client",
    "filelock": "the conversions' locks",
}


def canonical(name: str) -> str:
    """A package name as pip compares them."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def _declared(name: str) -> list[str]:
    """A distribution's requirement lines; caretune's from its pyproject.toml when it is not installed."""
    try:
        return distribution(name).requires or []
    except PackageNotFoundError:
        if name != "caretune" or not PYPROJECT.is_file():
            raise
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(f'{line}; extra == "{extra}"' for extra, lines in extras.items() for line in lines)]


def requirements(name: str, extra: str = ""):
    """A distribution's requirements that apply here: markers evaluated, with `extra` (only its own) when given."""
    from packaging.requirements import Requirement

    found = []
    for line in _declared(name):
        requirement = Requirement(line)
        if requirement.marker:
            if not requirement.marker.evaluate({"extra": extra}):
                continue
            if extra and requirement.marker.evaluate({"extra": ""}):
                continue
        elif extra:
            continue
        found.append(requirement)
    return found


def training_packages() -> tuple[str, ...]:
    """caretune's own requirements that a training run needs (PyTorch included), in pyproject.toml's order."""
    return tuple(canonical(r.name) for r in requirements("caretune") if canonical(r.name) not in NOT_FOR_TRAINING)


def closure(roots, stop: set[str], missing_ok: bool = False) -> dict[str, str | None]:
    """name -> installed version of every distribution reachable from roots, not descending into stop; a missing
    one raises PackageNotFoundError, or with `missing_ok` is None."""
    found: dict[str, str | None] = {}
    pending = [canonical(root) for root in roots]
    while pending:
        name = pending.pop()
        if name in found or name in stop:
            continue
        try:
            found[name] = distribution(name).version
        except PackageNotFoundError:
            if not missing_ok:
                raise
            found[name] = None
            continue
        pending.extend(canonical(r.name) for r in requirements(name))
    return found


def training_versions() -> dict[str, str | None]:
    """The installed version of every package that shapes a training result: caretune, the requirement closure of
        what training needs, the GPU extra and FlashAttention (None: not installed, e.g. torchvision, which
    LLaMA-Factory lists and never imports for text)."""
    roots = [*training_packages(), *(r.name for r in requirements("caretune", GPU_EXTRA)), FLASH_ATTN]
    found = closure(roots, set(), missing_ok=True)
    return dict(sorted({"caretune": __version__, **found}.items()))
