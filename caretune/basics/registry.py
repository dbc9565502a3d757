"""The dataset registry: LLaMA-Factory's `dataset_info.json`, merged without clobbering anyone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.basics.files import exclusive, sweep_temporaries, write_json_atomic


class RegistryError(UserError):
    """dataset_info.json cannot be read or would lose a user's entry; the message says how to fix it."""


def load_registry(path: str | os.PathLike) -> dict:
    """Read the registry (an empty one if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RegistryError(f"{path}:1: not UTF-8 text; fix or move the file (it was left untouched)") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path}:{err.lineno}: malformed JSON ({err.msg}); fix it (the file was left untouched)") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}:1: expected a JSON object of dataset entries, found {type(data).__name__}")
    return data


def relative_file_name(data_file: str | os.PathLike, registry_path: str | os.PathLike) -> str:
    """`file_name` as LLaMA-Factory resolves it: relative to the registry's folder (its dataset_dir)."""
    data_file = Path(data_file).resolve()
    root = Path(registry_path).resolve().parent
    try:
        return data_file.relative_to(root).as_posix()
    except ValueError:
        return data_file.as_posix()


def merge_entries(registry: dict, entries: dict[str, dict], registry_path: str | os.PathLike) -> dict:
    """Return `registry` with `entries` added or refreshed.

    An existing entry is refreshed only when it points at the same file (keys the user added
    to it are kept); one that points elsewhere is the user's and is never overwritten.
    """
    merged = dict(registry)
    for name, entry in entries.items():
        existing = registry.get(name)
        if existing is None:
            merged[name] = entry
            continue
        if not isinstance(existing, dict) or existing.get("file_name") != entry["file_name"]:
            where = existing.get("file_name") if isinstance(existing, dict) else existing
            raise RegistryError(
                f"{registry_path}: entry {name!r} already points at {where!r}, not {entry['file_name']!r}; "
                "rename or remove that entry, or convert with --out NAME.json to write and register under another name"
            )
        merged[name] = {**existing, **entry}
    return merged


def register(registry_path: str | os.PathLike, entries: dict[str, dict], *, lock_timeout: float | None = None, log=None) -> bool:
    """Merge `entries` into the registry file atomically, read and written under its lock so that concurrent
    registrations all survive; return True when the file changed."""
    with exclusive(registry_path, what="registering datasets", timeout=lock_timeout, log=log):
        sweep_temporaries([Path(registry_path)])
        registry = load_registry(registry_path)
        merged = merge_entries(registry, entries, registry_path)
        if merged == registry and Path(registry_path).exists():
            return False
        write_json_atomic(registry_path, merged)
        return True
