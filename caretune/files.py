"""Files: the one file hasher, and folders published whole (built in a staging folder beside the target, then
renamed into place)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from converters.writer import new_file_mode


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(target: str | os.PathLike, fill: Callable[[Path], None], *, replace: bool) -> Path:
    """Fill a staging folder beside `target`, then rename it to `target`.

    An existing `target` is replaced when `replace`, else kept (another process may have built it first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(new_file_mode(target, directory=True))  # mkdtemp makes it 0700
    try:
        fill(staging)
        if replace and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if replace or not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
