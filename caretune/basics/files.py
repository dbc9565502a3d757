"""Files: atomic outputs (written to a temp file beside the target, then renamed over it), locks, the one file
hasher, and folders published whole (built in a staging folder beside the target, then renamed into place).

A new file gets the mode the umask allows; a replaced file keeps its mode. Temp files are named
`.<target name>.<random>.tmp`; a run that holds a target's lock (`exclusive`, a `.<target name>.lock`
file beside it) sweeps the ones a killed run left (`sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from caretune.basics.errors import UserError

TEMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode(path: Path, *, directory: bool = False) -> int:
    """The mode a replacement of `path` gets: the existing file's mode, else what the umask allows."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return (0o777 if directory else 0o666) & ~_current_umask()


class AtomicFile:
    """A UTF-8 file that replaces `path` only on `commit()`; `discard()` (or an exception) leaves it untouched."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=TEMP_SUFFIX, dir=self.path.parent)
        os.fchmod(fd, new_file_mode(self.path))  # mkstemp makes it 0600; others must read what they read before
        self.tmp_path = Path(tmp)
        self.handle = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, text: str) -> None:
        """Add text to the file being written."""
        self.handle.write(text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        """Add bytes to the file being written."""
        self.handle.write(data)

    def commit(self) -> None:
        """Flush to disk and rename over the target."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        """Remove the temporary file; the target stays as it was."""
        if not self.handle.closed:
            self.handle.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.handle.closed:
            self.discard()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file guarding `path`: hidden, beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, *, what: str, timeout: float | None = None, log: Callable[[str], None] | None = None):
    """Hold the lock of `path` (across processes); when another run holds it, say so and wait, at most
    `timeout` seconds when given."""
    from filelock import FileLock, Timeout

    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, mode=new_file_mode(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log:
            log(f"waiting for another run that holds {lock_file} ({what})")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise UserError(
                f"{lock_file}: another run still holds it after {timeout:g} s ({what}); try again when it has finished"
            ) from None
    try:
        yield
    finally:
        lock.release()


def sweep_temporaries(targets: list[Path]) -> tuple[int, int]:
    """Remove the temp files of `targets` that a killed run left; only call while holding their lock, so
    no live run is writing them. Returns (files, bytes) removed."""
    files = size = 0
    for target in targets:
        for leftover in target.parent.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                size += leftover.stat().st_size
                leftover.unlink()
                files += 1
    return files, size


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    with AtomicFile(path) as out:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        out.commit()


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
