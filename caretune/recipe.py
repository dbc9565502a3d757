"""A recipe, loaded once: a LLaMA-Factory YAML and what every stage reads from it (datasets, folders, the adapter),
and the run folder `saves/<model folder>/{lora,base}/` whose layout every stage takes its paths from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from caretune.basics.errors import UserError
from caretune.basics.files import AtomicFile
from caretune.constants import TRAINER_LOG

RECIPES_DIR, SAVES = "recipes", Path("saves")
CONSISTENT_KEYS = ("template", "enable_thinking")  # a folder's recipes train, evaluate and serve one prompt
TUNED, BASE = "lora", "base"  # a model folder's run folders: the adapter's, and the base model's for comparison
TRAIN, PREDICT, JUDGE = "sft", "predict", "judge"
PREFERRED, PREFERENCE_TRAIN = "lora-dpo", "dpo"  # the SFT+DPO run folder (its adapters: SFT's, then DPO's) and its training
MEDICAL_SUITE = "medical"


class RecipeError(UserError):
    """A recipe cannot be read, or a recipe folder written, as asked; the message names the file (and line, for YAML
    errors)."""


def names_in(value: object) -> list[str]:
    """The names a list key holds (dataset, eval_dataset, adapter_name_or_path, report_to): LLaMA-Factory takes them
    comma-separated, or as a YAML list."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(name).strip() for name in value if str(name).strip()]
    return [name.strip() for name in str(value).split(",") if name.strip()]


def load_recipe(path: str | os.PathLike) -> dict:
    """A recipe's keys, or a one-line RecipeError naming the file (and line, for YAML errors)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe")
    try:
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text; save the recipe as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise RecipeError(f"{path}:{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(args, dict):
        raise RecipeError(f"{path}:1: a recipe is a mapping of LLaMA-Factory keys")
    return args


def disagreements(recipes: dict) -> list[tuple[str, dict]]:
    """The consistent keys whose value differs between recipes of one folder (an absent key counts as null, which
    LLaMA-Factory reads as its default): (key, {recipe: value})."""
    found = []
    for key in CONSISTENT_KEYS:
        values = {where: args.get(key) for where, args in recipes.items()}
        if len({repr(value) for value in values.values()}) > 1:
            found.append((key, values))
    return found


def checkpointing_problem(args: dict) -> str | None:
    """Why a training recipe's `gradient_checkpointing` says other than what happens (None when it does not):
    LLaMA-Factory checkpoints every model it trains unless `disable_gradient_checkpointing` is true, and the trainer
    checkpoints whenever `gradient_checkpointing` is true, whatever LLaMA-Factory was told."""
    said, kept = args.get("gradient_checkpointing"), args.get("disable_gradient_checkpointing", False)
    if not args.get("do_train") or not isinstance(said, bool) or not isinstance(kept, bool) or said is not kept:
        return None  # a value of another type is check_values' to name
    if said:
        return (
            "gradient_checkpointing is true, so the trainer checkpoints although disable_gradient_checkpointing is "
            "true: set gradient_checkpointing: false to keep every layer's activations, or drop "
            "disable_gradient_checkpointing to checkpoint"
        )
    return (
        "gradient_checkpointing is false, but LLaMA-Factory checkpoints unless disable_gradient_checkpointing is "
        "true: set that to keep every layer's activations (faster, more memory), or say gradient_checkpointing: true"
    )


@dataclass(frozen=True)
class RunDir:
    """One run folder, `saves/<model folder>/<lora|base>`: training in sft/, generation in predict/, multiple-choice
    scores in mcq/ (mcq-<suite>/ for other suites), judged sets in judge/<set>/."""

    root: Path

    @classmethod
    def tuned(cls, model_folder: str) -> RunDir:
        return cls(SAVES / model_folder / TUNED)

    @classmethod
    def preferred(cls, model_folder: str) -> RunDir:
        """The run of the DPO adapter trained on top of the SFT one."""
        return cls(SAVES / model_folder / PREFERRED)

    @classmethod
    def base(cls, model_folder: str) -> RunDir:
        return cls(SAVES / model_folder / BASE)

    @classmethod
    def holding(cls, path: str | os.PathLike) -> RunDir:
        """The run folder a path names: the folder itself, or the run its training folder (`.../lora/sft`, as
        `caretune runs` lists it) is part of."""
        path = Path(path)
        return cls(path.parent if (path / TRAINER_LOG).exists() and not (path / TRAIN).exists() else path)

    def task(self, task: str) -> Path:
        """A task's output folder: `lora_sft` trains into sft/, `predict` generates into predict/."""
        return self.root / task.removeprefix(f"{TUNED}_")

    @property
    def train(self) -> Path:
        """The run's training folder: sft/, or dpo/ for a preference run."""
        dpo = self.root / PREFERENCE_TRAIN
        return dpo if dpo.is_dir() and not (self.root / TRAIN).is_dir() else self.root / TRAIN

    @property
    def predict(self) -> Path:
        return self.root / PREDICT

    def mcq(self, suite: str = MEDICAL_SUITE) -> Path:
        return self.root / ("mcq" if suite == MEDICAL_SUITE else f"mcq-{suite}")

    def judged(self, name: str) -> Path:
        return self.root / JUDGE / name

    def judged_sets(self) -> list[Path]:
        return sorted(path.parent for path in (self.root / JUDGE).glob("*/judge.json"))


@dataclass(frozen=True)
class Recipe:
    """A recipe file's keys, read once, and what the stages derive from them."""

    path: Path
    args: dict

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        return cls(Path(path), load_recipe(path))

    @property
    def datasets(self) -> list[str]:
        return names_in(self.args.get("dataset"))

    @property
    def eval_datasets(self) -> list[str]:
        return names_in(self.args.get("eval_dataset"))

    @property
    def dataset_dir(self) -> Path:
        return Path(self.args.get("dataset_dir", "data"))

    @property
    def output_dir(self) -> Path | None:
        value = self.args.get("output_dir")
        if value and not isinstance(value, str):
            raise RecipeError(f"{self.path}: output_dir must be a folder path, not {value!r}")
        return Path(value) if value else None

    @property
    def adapter(self) -> str | None:
        return self.args.get("adapter_name_or_path")

    @property
    def run_dir(self) -> RunDir:
        """Where this recipe's results go: the run its adapter (the last, when it names several) was trained in; for
        a recipe without one, the run its output_dir is part of, else the base model's run folder (a base copy lives
        in it)."""
        if adapters := names_in(self.adapter):
            return RunDir(Path(adapters[-1]).parent)
        if self.output_dir is not None:
            return RunDir(self.output_dir.parent)
        return RunDir(self.path.parent) if self.path.parent.name == BASE else self.base_run_dir

    @property
    def base_run_dir(self) -> RunDir:
        """The run folder of this recipe's base model: saves/<model folder>/base."""
        return RunDir.base(self.path.parent.name)

    def base_copy(self) -> Recipe:
        """This recipe without its adapter, writing under the base model's run folder, where the copy is written
        (saves/<model folder>/base/<recipe file>) for LLaMA-Factory to run."""
        base = self.base_run_dir
        args = {key: value for key, value in self.args.items() if key != "adapter_name_or_path"}
        if "output_dir" in args:
            args["output_dir"] = str(base.root / Path(str(args["output_dir"])).name)
        path = base.root / self.path.name
        with AtomicFile(path) as out:
            out.write(yaml.safe_dump(args, allow_unicode=True, sort_keys=False))
            out.commit()
        return Recipe(path, args)
