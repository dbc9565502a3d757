"""Shared test helpers: paths of the shipped samples and of ../shared, scratch projects and recipes, and one way to
run the `caretune` command in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
CHATMED_SAMPLE = SAMPLE / "chatmed_consult_sample.jsonl"
HUATUO_SAMPLE = SAMPLE / "huatuo2_sft_sample.json"
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test on machines without it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not present on this machine")
    return path


def converted_workspace(path: Path) -> Path:
    """A project at `path`: both samples converted and registered, the shipped recipes copied."""
    import shutil

    from caretune.prep.fitting import TemplateTokenCounter
    from converters import chatmed, huatuo
    from converters.options import Options

    fitted = Options(cutoff_len=512, count=TemplateTokenCounter())  # the tiny recipes' cutoff: preflight measures nothing
    for source, raw in ((chatmed, CHATMED_SAMPLE), (huatuo, HUATUO_SAMPLE)):
        convert_into(path, source, raw, eval_size=5, options=fitted)
    shutil.copytree(ROOT / "recipes", path / "recipes")
    return path


def tiny_recipe(folder: Path, task: str, target: Path | None = None, **changes) -> Path:
    """A tiny-qwen3 recipe on a freshly built tiny model, without the adapter (the base model), with changes."""
    import yaml

    from caretune.training.tiny_model import build_tiny_model

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def caretune_env(**extra: str) -> dict:
    """The environment of a `caretune` subprocess: offline, this checkout importable, LLaMA-Factory quiet."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "LLAMAFACTORY_VERBOSITY": "WARN", **extra}


def run_caretune(cwd, *args, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`caretune ARGS` in `cwd`, run to its end; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "caretune.cli", *map(str, args)],
        cwd=cwd,
        env=caretune_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_caretune(cwd, *args, env: dict | None = None, **popen) -> subprocess.Popen:
    """`caretune ARGS` started in `cwd` (a server or a long run); stdout and stderr together, as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "caretune.cli", *map(str, args)],
        cwd=cwd,
        env=caretune_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def convert_into(project: Path, source, raw, eval_size: int = 5, max_eval_fraction: float = 0.1, workers=None, **kwargs):
    """Convert `raw` with `source` into project/data, registering in project/dataset_info.json: (report, outputs)."""
    from converters.options import HeldOut, RunControls
    from converters.outputs import Outputs
    from converters.pipeline import convert_file

    outputs = Outputs.for_source(source, None, project / "data")
    report = convert_file(
        source,
        raw,
        outputs,
        HeldOut(eval_size, max_eval_fraction),
        registry_path=project / "dataset_info.json",
        controls=RunControls(workers=workers),
        **kwargs,
    )
    return report, outputs


def accounted(report: dict) -> bool:
    """Every row read is written, held out, a duplicate or skipped."""
    return report["read"] == report["written"] + report["eval"] + report["duplicates"] + sum(report["skipped"].values())


def edit_recipe(path, target=None, **changes) -> Path:
    """The recipe at `path` with keys changed (None removes a key), written to `target` (default: in place)."""
    import yaml

    args = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    target = Path(target or path)
    target.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    return target


def edited_copy(tmp_path, edits: dict[str, list[tuple[str, str]]], source: Path | None = None):
    """The recipes of `source` (default: the shipped ones) and this repository's registry copied to tmp_path, with
    regular-expression replacements (pattern, replacement) applied per file, each of which must match."""
    shutil.copytree((source or ROOT) / "recipes", tmp_path / "recipes")
    shutil.copy(ROOT / "dataset_info.json", tmp_path / "dataset_info.json")
    for relative, replacements in edits.items():
        path = tmp_path / relative
        text = path.read_text(encoding="utf-8")
        for pattern, replacement in replacements:
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            assert count, (relative, pattern)
        path.write_text(text, encoding="utf-8")
    return tmp_path
