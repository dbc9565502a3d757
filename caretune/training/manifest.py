"""The run manifest: what a model was trained on, written beside each run (`<output_dir>.run.json`).

`caretune train` writes it atomically when a run starts and completes it when the run ends. It holds the code
(git commit, dirty tree), the recipe's and DeepSpeed config's full text and SHA-256, every dataset's registry
entry, file SHA-256 and conversion report (settings, counts, filters, care policy), the package versions that
shape the result, the hardware, world size, seed, command line and environment switches, and at the end the
exit, last step, last loss and the output files with their SHA-256. Secrets are listed by name only (never their
values), and no row of data is copied into it: patient text never goes in.

`caretune runs show RUN` prints it; `caretune runs verify RUN` recomputes every hash and compares the package
versions, naming what changed since the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from caretune.constants import DATASET_INFO

MANIFEST_FORMAT = 1
PACKAGES = (
    "torch",
    "llamafactory",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "deepspeed",
    "liger-kernel",
    "flash-attn",
    "caretune",
)
SWITCHES = (
    "USE_RAY",
    "FORCE_TORCHRUN",
    "NPROC_PER_NODE",
    "NNODES",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "CUDA_VISIBLE_DEVICES",
)
SECRET_NAME = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)  # HF_TOKEN, not TOKENIZERS_*
OUTPUT_FILES = ("adapter_model.safetensors", "adapter_config.json", "all_results.json", "train_results.json", "trainer_state.json")
REPORT_SUMMARY = (
    "source",
    "read",
    "written",
    "eval",
    "duplicates",
    "skipped",
    "changes",
    "care",
    "settings",
    "input",
    "pii_masked",
)


def sha256(path: str | os.PathLike) -> str | None:
    """A file's SHA-256, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _file(path: str | os.PathLike | None) -> dict | None:
    """A file's path, full text and SHA-256 (for the small config files a run is defined by)."""
    if not path:
        return None
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {"path": str(path), "text": None, "sha256": None}
    return {"path": str(path), "text": text, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def git_state(folder: Path) -> dict:
    """The commit checked out in `folder` and whether its tracked or untracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    """The installed versions of the packages that shape a training result (None: not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict:
    """GPU names, count, memory, driver and CUDA, or the CPU when there is no GPU."""
    import torch

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "cuda": torch.version.cuda, "gpus": []}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1)})
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            ).stdout.split()
            info["driver"] = driver[0] if driver else None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    return info


def environment(env: dict[str, str]) -> dict:
    """The switches that change how a run launches, and the names (never the values) of secrets set."""
    return {
        "switches": {name: env[name] for name in SWITCHES if name in env},
        "secrets_set": sorted(name for name in env if SECRET_NAME.search(name)),
    }


def _conversion_report(data_file: Path) -> dict | None:
    """The summary of the conversion report that wrote `data_file` (train or eval split), if one lies beside it."""
    for report_path in sorted(data_file.parent.glob("*.report.json")):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            outputs = report["outputs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if data_file.name in (Path(outputs.get("train", "")).name, Path(outputs.get("eval", "")).name):
            return {"path": str(report_path), "sha256": sha256(report_path), **{k: report.get(k) for k in REPORT_SUMMARY}}
    return None


def datasets(args: dict) -> list[dict]:
    """Every dataset the recipe names (train and eval): registry entry, file SHA-256, conversion report."""
    from converters.registry import RegistryError, load_registry

    dataset_dir = Path(args.get("dataset_dir", "data"))
    try:
        registry = load_registry(dataset_dir / DATASET_INFO)
    except RegistryError:
        registry = {}
    found = []
    for key in ("dataset", "eval_dataset"):
        for name in (n.strip() for n in str(args.get(key) or "").split(",") if n.strip()):
            entry = registry.get(name)
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            data_file = dataset_dir / file_name if file_name else None
            found.append(
                {
                    "name": name,
                    "role": "train" if key == "dataset" else "eval",
                    "entry": entry,
                    "file": str(data_file) if data_file else None,
                    "sha256": sha256(data_file) if data_file else None,
                    "bytes": data_file.stat().st_size if data_file and data_file.is_file() else None,
                    "conversion": _conversion_report(data_file) if data_file else None,
                }
            )
    return found


def start_manifest(recipe: Path, args: dict, processes: int, command: list[str], env: dict[str, str]) -> dict:
    """The manifest's fields known when a run starts."""
    nodes = int(env.get("NNODES", "1") or 1)
    return {
        "manifest_format": MANIFEST_FORMAT,
        "code": git_state(Path.cwd()),
        "recipe": _file(recipe),
        "deepspeed": _file(args.get("deepspeed")),
        "datasets": datasets(args),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "hardware": hardware(),
        "world_size": processes * nodes,
        "seed": args.get("seed", 42),  # the Hugging Face trainer's default when the recipe sets none
        "command": {"caretune": [Path(sys.argv[0]).name, *sys.argv[1:]], "llamafactory": command},
        "environment": environment(env),
    }


def end_manifest(output_dir: Path) -> dict:
    """The manifest's fields known when a run ends: last step and loss, the output files and their SHA-256."""
    from caretune.training.runs import read_run

    run = read_run(output_dir)
    outputs = {name: sha256(output_dir / name) for name in OUTPUT_FILES if (output_dir / name).is_file()}
    return {"last_step": run.get("step"), "last_loss": run.get("last_loss"), "outputs": outputs}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def verify(manifest: dict, output_dir: Path) -> list[str]:
    """What differs now from what the manifest recorded: files (recipe, DeepSpeed config, data, conversion
    reports, outputs) and package versions; empty when nothing did."""
    changes = []

    def compare(label: str, path: str | None, recorded: str | None, text: bool = False) -> None:
        if not path or recorded is None:
            return
        current = _file(path)["sha256"] if text else sha256(path)
        if current is None:
            changes.append(f"{label} {path}: missing now")
        elif current != recorded:
            changes.append(f"{label} {path}: changed (SHA-256 {recorded[:12]}… then, {current[:12]}… now)")

    for label in ("recipe", "deepspeed"):
        recorded = manifest.get(label) or {}
        compare(label, recorded.get("path"), recorded.get("sha256"), text=True)
    for dataset in manifest.get("datasets", []):
        compare(f"dataset {dataset['name']}", dataset.get("file"), dataset.get("sha256"))
        report = dataset.get("conversion") or {}
        compare(f"conversion report of {dataset['name']}", report.get("path"), report.get("sha256"))
    for name, recorded in (manifest.get("outputs") or {}).items():
        compare("output", str(output_dir / name), recorded)
    for package, recorded in (manifest.get("packages") or {}).items():
        current = package_versions().get(package) if package in PACKAGES else recorded
        if current != recorded:
            changes.append(f"package {package}: {recorded} then, {current} now")
    return changes


def describe(manifest: dict) -> str:
    """The manifest as a person reads it."""
    code = manifest.get("code") or {}
    recipe = manifest.get("recipe") or {}
    state = f"{manifest.get('state')} (exit {manifest.get('exit_code')})"
    lines = [
        f"state       {state}, {manifest.get('started')} -> {manifest.get('ended') or 'not ended'}",
        f"code        {code.get('commit') or 'not a git checkout'}{' (dirty tree)' if code.get('dirty') else ''}",
        f"recipe      {recipe.get('path')}  sha256 {(recipe.get('sha256') or '')[:16]}",
        f"deepspeed   {(manifest.get('deepspeed') or {}).get('path') or 'off'}",
    ]
    for dataset in manifest.get("datasets", []):
        report = dataset.get("conversion") or {}
        counts = (
            f"; converted: read {report.get('read')}, train {report.get('written')}, eval {report.get('eval')}, "
            f"care reminder {(report.get('settings') or {}).get('care_reminder')}"
            if report
            else ""
        )
        digest = (dataset.get("sha256") or "")[:16]
        lines.append(f"dataset     {dataset['name']} ({dataset['role']}) {dataset.get('file')}  sha256 {digest}{counts}")
    packages = ", ".join(f"{k} {v}" for k, v in (manifest.get("packages") or {}).items() if v)
    hw = manifest.get("hardware") or {}
    gpus = ", ".join(g["name"] for g in hw.get("gpus", [])) or f"CPU ({hw.get('cpu_count')} cores)"
    env = manifest.get("environment") or {}
    lines += [
        f"packages    {packages}",
        f"hardware    {gpus}; CUDA {hw.get('cuda')}; world size {manifest.get('world_size')}; seed {manifest.get('seed')}",
        f"command     {' '.join(map(str, (manifest.get('command') or {}).get('llamafactory') or []))}",
        f"switches    {env.get('switches') or {}}; secrets set (names only): {', '.join(env.get('secrets_set') or []) or 'none'}",
        f"result      step {manifest.get('last_step')}, loss {manifest.get('last_loss')}",
    ]
    lines += [f"output      {name}  sha256 {(digest or '')[:16]}" for name, digest in (manifest.get("outputs") or {}).items()]
    return "\n".join(lines)
