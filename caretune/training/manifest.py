"""The run manifest: what a model was trained on, written beside each run (`<output_dir>.run.json`).

`caretune train` writes it atomically when a run starts and completes it when the run ends. It holds the project
root (every path is recorded as given and absolute), the code (git commit, and a SHA-256 of any uncommitted
change to a tracked file), the recipe's and DeepSpeed config's SHA-256 and parsed keys (never their text), the adapters a
run starts from, every dataset's registry entry, file SHA-256 and
conversion report (settings, counts, filters, care policy), the package versions that shape the result, the
hardware, world size, seed, command line and environment switches; at the end the exit, last step, last loss,
the output files and every checkpoint's files with their SHA-256, and the base model's config, tokenizer files,
weight index and weights (sizes and SHA-256). Each start or resume is an attempt of its own (its data hashes,
step range, end state and exit). Secrets are listed by name only; recipe values under secret-looking keys (and any
value equal to one), and every URL's user and password, are redacted; no row of data is copied into it: patient text
never goes in.

`caretune runs show RUN` prints it; `caretune runs verify RUN` checks every recorded section against the files
now, resolving paths from the manifest (never from the current folder), and names each difference and each
section that was never recorded.
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

from caretune.basics.files import sha256_file
from caretune.constants import ADAPTER_FILES, DATASET_INFO
from caretune.packages import training_versions
from caretune.recipe import names_in
from caretune.training.audit import listing, path_record, untracked_code

MANIFEST_FORMAT = 3  # 2: the adapters a run starts from; 3: full listings, registry entries, link targets, paths
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
SECRET_WORD = re.compile(r"token|key|secret|password|passwd|pwd|passphrase|authorization|credential", re.IGNORECASE)
SECRET_FIELD = re.compile(r"(token|key|secret|password|passwd|pwd|passphrase|authorization|credentials?)$", re.IGNORECASE)
URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s]*@")
REDACTED = "<redacted>"
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
    try:
        return sha256_file(path)
    except OSError:
        return None


def secret_key(name: str) -> bool:
    """A recipe key whose value may be a secret: any name holding token, key, secret, password, passwd, pwd,
    passphrase, authorization or credential (hubtoken, wandbkey, hubToken, db_password), except a known field of
    LLaMA-Factory's or transformers' arguments that is not one (max_new_tokens, tokenized_path, new_special_tokens_config;
    the hubs' tokens and swanlab's key and secret are)."""
    if not SECRET_WORD.search(name):
        return False
    from caretune import lf

    return name not in lf.known_keys() or bool(SECRET_FIELD.search(name))


def _without_userinfo(text: str) -> str:
    """A value with the user and password taken out of every URL in it."""
    return URL_USERINFO.sub(r"\1", text)


def redacted_keys(text: str):
    """A recipe's (or DeepSpeed config's) parsed keys with secret-looking values replaced at any depth, every URL's
    userinfo removed, and any other value equal to a redacted one (a YAML alias) redacted too; None for text that is
    not YAML. Never the text: a comment may quote a secret."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    secrets: set[str] = set()

    def collect(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if secret_key(str(key)) and isinstance(item, (str, int, float)) and not isinstance(item, bool):
                    secrets.add(str(item))
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    def clean(value, secret: bool = False):
        if isinstance(value, dict):
            return {key: clean(item, secret_key(str(key))) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item, secret) for item in value]
        if (secret and value not in (None, "") and not isinstance(value, bool)) or (value is not None and str(value) in secrets):
            return REDACTED
        return _without_userinfo(value) if isinstance(value, str) else value

    collect(data)
    return clean(data)


def file_record(path: str | os.PathLike | None) -> dict | None:
    """A config file's path (as given and absolute), its SHA-256 and its parsed keys, secrets redacted (for the small
    files a run is defined by); never its text."""
    if not path:
        return None
    path = Path(path)
    where = {"path": str(path), "abs_path": str(path.resolve())}
    try:
        data = path.read_bytes()
    except OSError:
        return {**where, "keys": None, "sha256": None}
    return {**where, "keys": redacted_keys(data.decode("utf-8", errors="replace")), "sha256": hashlib.sha256(data).hexdigest()}


def git_state(folder: Path) -> dict:
    """The commit checked out in `folder` and whether its tracked or untracked files differ from it (read as bytes:
    a tracked file need not be UTF-8)."""

    def git(*args: str) -> bytes | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    diff = git("diff", "HEAD", "--binary") if commit else None  # tracked files: untracked ones are often outputs
    return {
        "commit": commit.decode("ascii", errors="replace") if commit else None,
        "dirty": bool(status) if status is not None else None,
        "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None,
    }


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


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
            where = {"path": str(report_path), "abs_path": str(report_path.resolve()), "sha256": sha256(report_path)}
            return {**where, **{k: report.get(k) for k in REPORT_SUMMARY}}
    return None


def datasets(args: dict) -> list[dict]:
    """Every dataset the recipe names (train and eval): registry entry, file SHA-256, conversion report."""
    from caretune.basics.registry import RegistryError, load_registry

    dataset_dir = Path(args.get("dataset_dir", "data"))
    try:
        registry = load_registry(dataset_dir / DATASET_INFO)
    except RegistryError:
        registry = {}
    found = []
    for key in ("dataset", "eval_dataset"):
        for name in names_in(args.get(key)):
            entry = registry.get(name)
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            data_file = dataset_dir / file_name if file_name else None
            found.append(
                {
                    "name": name,
                    "role": "train" if key == "dataset" else "eval",
                    "entry": entry,
                    "file": str(data_file) if data_file else None,
                    "abs_file": os.path.abspath(data_file) if data_file else None,  # the link, not its target
                    "target": os.path.realpath(data_file) if data_file else None,
                    "sha256": sha256(data_file) if data_file else None,
                    "bytes": data_file.stat().st_size if data_file and data_file.is_file() else None,
                    "conversion": _conversion_report(data_file) if data_file else None,
                }
            )
    return found


def adapters(args: dict) -> list[dict]:
    """The LoRA adapters a run starts from (a DPO run's SFT adapter), in order: path as given and absolute, every file's
    SHA-256, and the manifest of the run that trained it (SHA-256), when caretune trained it."""
    from caretune.recipe import names_in
    from caretune.training.runs import trained_by

    found = []
    for adapter in names_in(args.get("adapter_name_or_path")):
        folder = Path(adapter)
        files = {name: sha256(folder / name) for name in ADAPTER_FILES if (folder / name).is_file()} if folder.is_dir() else {}
        found.append({"path": adapter, "abs_path": str(folder.resolve()), "files": files, "trained_by": trained_by(folder)})
    return found


def start_manifest(recipe: Path, args: dict, processes: int, command: list[str], env: dict[str, str]) -> dict:
    """The manifest's fields known when a run starts."""
    nodes = int(env.get("NNODES", "1") or 1)
    return {
        "manifest_format": MANIFEST_FORMAT,
        "project_root": str(Path.cwd().resolve()),
        "code": {**git_state(Path.cwd()), "untracked": untracked_code(Path.cwd())},
        "recipe": file_record(recipe),
        "deepspeed": file_record(args.get("deepspeed")),
        "datasets": datasets(args),
        "adapters": adapters(args),
        "packages": training_versions(),
        "python": sys.version.split()[0],
        "hardware": hardware(),
        "world_size": processes * nodes,
        "seed": args.get("seed", 42),  # the Hugging Face trainer's default when the recipe sets none
        "command": {"caretune": [Path(sys.argv[0]).name, *sys.argv[1:]], "llamafactory": command},
        "environment": environment(env),
    }


def end_manifest(output_dir: Path, args: dict) -> dict:
    """The manifest's fields known when a run ends: last step and loss, the output folder's and every checkpoint's
    files (audit.listing), the base model's (LLaMA-Factory has fetched it by then), and every other path the recipe
    names (tokenized_path, a special-tokens file, ...)."""
    from caretune.training.runs import read_run

    run = read_run(output_dir)
    checkpoints = sorted(folder for folder in output_dir.glob("checkpoint-*") if folder.is_dir())
    return {
        "last_step": run.get("step"),
        "last_loss": run.get("last_loss"),
        "outputs": listing(output_dir, skip=tuple(folder.name for folder in checkpoints)),
        "checkpoints": {folder.name: listing(folder) for folder in checkpoints},
        "base_model": base_model(args.get("model_name_or_path")),
        "paths": recipe_paths(args),
    }


OWN_SECTIONS = ("model_name_or_path", "adapter_name_or_path", "output_dir", "dataset_dir", "deepspeed", "logging_dir")


def recipe_paths(args: dict) -> dict[str, dict]:
    """Every other recipe value that names a local file or folder (tokenized_path, ref_model_adapters, a template or
    special-tokens file, ...): where it is and what is there."""
    from caretune.recipe import names_in

    found = {}
    for key, value in args.items():
        if key in OWN_SECTIONS or not isinstance(value, str) or not value or "\n" in value:
            continue
        for part in names_in(value) if "," in value else [value]:
            if Path(part).exists() or key == "tokenized_path":
                found[f"{key}: {part}" if part != value else key] = path_record(part)
    return found


def model_folder(model: str | None) -> Path | None:
    """The folder holding a base model: a local path, or the Hugging Face cache's copy of a hub model (looked up
    offline); None when it is on neither."""
    if not model:
        return None
    if Path(model).is_dir():
        return Path(model).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached here, or not a hub name
        return None


def base_model(model: str | None) -> dict:
    """The base model's folder, every file listed (audit.listing: weights in the hub's cache by their blob names)."""
    folder = model_folder(model)
    if folder is None:
        return {"name": model, "folder": None}
    return {"name": model, "folder": str(folder), "listing": listing(folder)}


def attempt_start(manifest: dict, resumed_from: str | None) -> dict:
    """One start or resume of a run: when, from which checkpoint, and the recipe and data it saw."""
    return {
        "started": now(),
        "resumed_from": resumed_from,
        "recipe_sha256": (manifest.get("recipe") or {}).get("sha256"),
        "data_sha256": {d["name"]: d.get("sha256") for d in manifest.get("datasets") or []},
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
