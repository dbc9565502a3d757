"""Atomic outputs: everything is written to a temp file beside the target, then renamed over it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO


class AtomicFile:
    """A text file that replaces `path` only on `commit()`; `discard()` (or an exception) leaves it untouched."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp_path = Path(tmp)
        self.handle: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20)

    def write(self, text: str) -> None:
        self.handle.write(text)

    def commit(self) -> None:
        """Flush to disk and rename over the target."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.handle.closed:
            self.discard()


def dumps(record: dict) -> str:
    """One record as compact UTF-8 JSON (Chinese kept readable)."""
    return json.dumps(record, ensure_ascii=False)


class JsonArrayWriter(AtomicFile):
    """A JSON array, one record per line: valid JSON that is also easy to stream and diff."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.count = 0
        self.write("[")

    def append(self, record: dict) -> None:
        self.write(("\n" if self.count == 0 else ",\n") + dumps(record))
        self.count += 1

    def commit(self) -> None:
        self.write("\n]\n" if self.count else "]\n")
        super().commit()


class JsonLinesWriter(AtomicFile):
    """JSON Lines, one record per line."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.count = 0

    def append(self, record: dict) -> None:
        self.write(dumps(record) + "\n")
        self.count += 1


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    with AtomicFile(path) as out:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        out.commit()
