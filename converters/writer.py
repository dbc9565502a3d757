"""Record writers of the converters' outputs: a JSON array or JSON Lines, each an atomic file
(caretune.basics.files) that replaces its target only when complete."""

from __future__ import annotations

import os

import jsonlines

from caretune.basics.files import AtomicFile
from converters.jsoncodec import dumps_bytes


class JsonArrayWriter(AtomicFile):
    """A JSON array, one record per line: valid JSON that is also easy to stream and diff."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.count = 0
        self.write_bytes(b"[")

    def extend_json(self, records: list[bytes]) -> None:
        """Append records already serialised as UTF-8 JSON."""
        if not records:
            return
        self.write_bytes((b"\n" if self.count == 0 else b",\n") + b",\n".join(records))
        self.count += len(records)

    def commit(self) -> None:
        self.write_bytes(b"\n]\n" if self.count else b"]\n")
        super().commit()


class JsonLinesWriter(AtomicFile):
    """JSON Lines, one record per line, written by `jsonlines` with orjson as its encoder."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.count = 0
        self._writer = jsonlines.Writer(self.handle, dumps=dumps_bytes)

    def append(self, record: dict) -> None:
        """Write one record as a JSON line."""
        self._writer.write(record)
        self.count += 1
