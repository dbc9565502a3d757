"""Shared fixtures: the shipped sample, the real public shards in ../shared when present, a scratch project."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
CHATMED_SAMPLE = SAMPLE / "chatmed_consult_sample.jsonl"
HUATUO_SAMPLE = SAMPLE / "huatuo2_sft_sample.json"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test on machines without it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not present on this machine")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder: data/ for outputs and dataset_info.json beside it."""
    (tmp_path / "data").mkdir()
    return tmp_path


def converted_workspace(path: Path) -> Path:
    """A project at `path`: both samples converted and registered, the shipped recipes copied."""
    import shutil

    from converters import chatmed, huatuo
    from converters.pipeline import Outputs, convert_file

    for source, raw in ((chatmed, CHATMED_SAMPLE), (huatuo, HUATUO_SAMPLE)):
        convert_file(source, raw, Outputs.for_source(source, None, path / "data"), eval_size=5,
                     max_eval_fraction=0.1, registry_path=path / "dataset_info.json")
    shutil.copytree(ROOT / "recipes", path / "recipes")
    return path


def tiny_recipe(folder: Path, task: str, target: Path | None = None, **changes) -> Path:
    """A tiny-qwen3 recipe on a freshly built tiny model, without the adapter (the base model), with changes."""
    import yaml

    from caretune.tiny_model import build_tiny_model

    args = yaml.safe_load((ROOT / "recipes" / "tiny-qwen3" / f"{task}.yaml").read_text(encoding="utf-8"))
    args.pop("adapter_name_or_path", None)
    args.update(model_name_or_path=str(build_tiny_model(folder / "tiny")), **changes)
    target = target or folder / f"{task}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    return target


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path
