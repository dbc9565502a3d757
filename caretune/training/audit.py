"""Folder listings for the run manifest: every file's size and SHA-256, so `caretune runs verify` names a file that is
new, removed or changed anywhere in the base model, the output folder, a checkpoint or a folder the recipe names.

A file up to HASH_BOUND bytes is hashed. A larger one (weights) is recorded by its size and, in the Hugging Face
cache, by the SHA-256 its blob is named by, so a run's end re-hashes nothing the hub already named; elsewhere it is
hashed once when recorded. Verification compares sizes, and hashes what is under the bound; `deep` hashes every file
(a blob name is a claim, not a check).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from caretune.basics.files import sha256_file

HASH_BOUND = 64 << 20
_BLOB = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def file_entry(path: Path) -> dict:
    """One file's size and SHA-256 (from the hub's blob name for a large cached file)."""
    size = path.stat().st_size
    if size <= HASH_BOUND:
        return {"bytes": size, "sha256": _sha256(path)}
    target = Path(os.path.realpath(path))
    if target.parent.name == "blobs" and _BLOB.fullmatch(target.name):
        return {"bytes": size, "sha256": target.name, "from": "hub blob name"}
    return {"bytes": size, "sha256": _sha256(path)}


def listing(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every file under `folder` (relative path: size and SHA-256), the top-level entries named in `skip` left out."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip or not path.is_file():
            continue
        found[relative.as_posix()] = file_entry(path)
    return found


def path_record(path: str) -> dict:
    """A path a recipe names, as given, absolute (links not followed) and its target, with a listing of what is
    there: one file's entry, or a folder's listing."""
    where = Path(path)
    record = {"path": path, "abs_path": os.path.abspath(where), "target": os.path.realpath(where)}
    if where.is_file():
        return {**record, "file": file_entry(where)}
    if where.is_dir():
        return {**record, "listing": listing(where)}
    return {**record, "missing": True}


def listing_changes(
    label: str, folder: Path, recorded: dict[str, dict], deep: bool, skip: tuple[str, ...] = (), complete: bool = True
) -> list[str]:
    """What differs between a recorded listing and the folder now: each file removed or changed, and, when the
    listing was `complete` (every file recorded), each new one. An entry without a size (an older manifest's) is
    compared by its SHA-256."""
    problems = []
    now = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] not in skip
    }
    for name, entry in recorded.items():
        path = now.get(name)
        if path is None:
            problems.append(f"{label} {Path(folder) / name}: missing now")
            continue
        size = path.stat().st_size
        if entry.get("bytes") is not None and size != entry["bytes"]:
            problems.append(f"{label} {path}: {entry['bytes']} bytes then, {size} now")
        elif (deep or size <= HASH_BOUND) and entry.get("sha256") and _sha256(path) != entry["sha256"]:
            problems.append(f"{label} {path}: changed (SHA-256 {entry['sha256'][:12]}… then)")
    if complete:
        problems += [f"{label} {now[name]}: new since" for name in sorted(set(now) - set(recorded))]
    return problems


def path_changes(label: str, record: dict, deep: bool) -> list[str]:
    """What differs for a path a recipe names: its link repointed, the file or folder changed."""
    where = Path(record["abs_path"])
    problems = []
    if os.path.realpath(where) != record["target"]:
        problems.append(f"{label} {record['path']}: points at {os.path.realpath(where)} now, {record['target']} then")
    if "file" in record:
        if not where.is_file():
            return [*problems, f"{label} {record['path']}: missing now"]
        return problems + listing_changes(label, where.parent, {where.name: record["file"]}, deep)[:1]
    if "listing" in record:
        if not where.is_dir():
            return [*problems, f"{label} {record['path']}: missing now"]
        return problems + listing_changes(label, where, record["listing"], deep)
    return problems + ([f"{label} {record['path']}: present now, missing then"] if where.exists() else [])


def code_packages(root: Path) -> list[str]:
    """The project's code packages: its top-level folders holding an `__init__.py`."""
    return sorted(path.name for path in Path(root).iterdir() if (path / "__init__.py").is_file())


def untracked_code(root: Path) -> dict[str, str | None] | None:
    """Files inside the code packages that git does not track (ignored ones excepted), with their SHA-256; None outside
    a git checkout."""
    packages = code_packages(root)
    if not packages:
        return {}
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", *packages],
            cwd=root,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    names = [entry[3:].decode("utf-8", errors="replace") for entry in done.stdout.split(b"\0") if entry.startswith(b"?? ")]
    return {name: _sha256(Path(root) / name) for name in sorted(names)}
