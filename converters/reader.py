"""Streaming readers that know line numbers: JSON Lines, or one (huge) JSON array.

Both yield `(line_number, value)`; a JSON Lines row that does not parse yields an
`InvalidJson` message instead. Anything that makes the file as a whole unreadable
(wrong encoding, not JSON at all, a broken array) raises `UserError` naming file and line.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable, Iterator

import jsonlines
import orjson

from caretune.basics.errors import UserError
from converters.jsoncodec import loads_rejected

JSONL = "jsonl"
JSON_ARRAY = "json-array"

CHUNK_BYTES = 1 << 20
MAX_ELEMENT_CHARS = 64 << 20  # one array element larger than this is treated as a broken file
_BOM = codecs.BOM_UTF8
_WHITESPACE = " \t\r\n"


class RawFile:
    """A raw input file opened for one streaming pass: detects its format, hashes what it reads."""

    def __init__(self, path: str | os.PathLike, on_bytes: Callable[[int], None] | None = None):
        self.path = os.fspath(path)
        self.size = os.path.getsize(self.path)
        self.sha256 = hashlib.sha256()
        self.on_bytes = on_bytes or (lambda n: None)  # told the size of each chunk read
        self.format = self._detect()

    def _detect(self) -> str:
        with open(self.path, "rb") as handle:
            head = handle.read(4096)
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        stripped = head.lstrip(b" \t\r\n")
        if not stripped:
            raise UserError(f"{self.path}:1: file is empty")
        line = 1 + head[: len(head) - len(stripped)].count(b"\n")
        first = stripped[:1]
        if first == b"[":
            return JSON_ARRAY
        if first == b"{":
            return JSONL
        try:
            shown = stripped[:20].decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}:{line}: not UTF-8 text (convert the file to UTF-8 first)") from None
        raise UserError(f"{self.path}:{line}: not JSON Lines or a JSON array (starts with {shown!r})")

    def _chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            first = True
            while chunk := handle.read(CHUNK_BYTES):
                self.sha256.update(chunk)
                self.on_bytes(len(chunk))
                if first and chunk.startswith(_BOM):
                    chunk = chunk[len(_BOM) :]
                first = False
                yield chunk

    def rows(self) -> Iterator[tuple[int, object]]:
        """Yield `(line_number, value)` for every row of the file."""
        if self.format == JSON_ARRAY:
            return self._array_rows()
        return (row for first_line, block in self.jsonl_blocks() for row in parse_jsonl_block(self.path, first_line, block))

    def jsonl_blocks(self) -> Iterator[tuple[int, bytes]]:
        """Yield `(first_line_number, block)`: runs of whole JSON Lines rows, about CHUNK_BYTES each."""
        next_line = 1
        pending = b""
        for chunk in self._chunks():
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                pending = data
                continue
            block, pending = data[:cut], data[cut:]
            yield next_line, block
            next_line += block.count(b"\n")
        if pending:
            yield next_line, pending

    def _array_rows(self) -> Iterator[tuple[int, object]]:
        return _ArrayScanner(self.path, self._chunks()).rows()


class _ArrayScanner:
    """Elements of one JSON array read chunk by chunk, each with the line it starts on; nothing but the
    current element and the unread rest of its chunk is held in memory."""

    def __init__(self, path, chunks: Iterator[bytes]) -> None:
        self.path, self.chunks = path, chunks
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos = "", 0
        self.counted_pos, self.counted_line = 0, 1  # buf[counted_pos] is on line counted_line
        self.eof = False

    def line_of(self, index: int) -> int:
        """Line number of buf[index], counting newlines incrementally."""
        if index >= self.counted_pos:
            self.counted_line += self.buf.count("\n", self.counted_pos, index)
            self.counted_pos = index
            return self.counted_line
        return self.counted_line - self.buf.count("\n", index, self.counted_pos)

    def more(self) -> bool:
        """Append the next chunk to buf (dropping what was read); False at end of file."""
        if self.eof:
            return False
        self.counted_line = self.line_of(self.pos)
        self.counted_pos = 0
        self.buf = self.buf[self.pos :]
        self.pos = 0
        chunk = next(self.chunks, None)
        try:
            if chunk is None:
                self.eof = True
                self.buf += self.utf8.decode(b"", final=True)
                return False
            self.buf += self.utf8.decode(chunk)
        except UnicodeDecodeError as err:
            line = self.line_of(len(self.buf)) + (chunk or b"").count(b"\n", 0, err.start)
            raise UserError(f"{self.path}:{line}: not UTF-8 text (convert the file to UTF-8 first)") from None
        return True

    def skip_whitespace(self) -> str:
        """Advance past whitespace; return the next character ('' at end of file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def element(self) -> tuple[int, object]:
        """The element at pos and the line it starts on; reads more chunks until it parses."""
        start = self.pos
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                break
            except json.JSONDecodeError as err:
                if len(self.buf) - self.pos > MAX_ELEMENT_CHARS:
                    raise UserError(
                        f"{self.path}:{self.line_of(self.pos)}: array element larger than "
                        f"{MAX_ELEMENT_CHARS >> 20} MiB or malformed ({err.msg})"
                    ) from None
                if not self.more():
                    if self.buf[err.pos :].strip():
                        where, what = self.line_of(err.pos), err.msg
                    else:  # the file ends inside this element
                        where, what = self.line_of(self.pos), "the file ends inside this element (truncated download?)"
                    raise UserError(
                        f"{self.path}:{where}: invalid JSON in array: {what}"
                        " (a JSON array must parse as a whole; fix it or use JSON Lines)"
                    ) from None
                start = self.pos
        line = self.line_of(start)
        self.pos = end
        return line, value

    def rows(self) -> Iterator[tuple[int, object]]:
        """(line, element) for every element, then a check that nothing follows the closing ']'."""
        self.skip_whitespace()
        self.pos += 1  # the opening '[' seen by _detect
        if self.skip_whitespace() == "]":
            return
        while True:
            yield self.element()
            separator = self.skip_whitespace()
            if separator == "]":
                self.pos += 1
                if self.skip_whitespace():
                    raise UserError(f"{self.path}:{self.line_of(self.pos)}: unexpected data after the closing ']'")
                return
            if separator != ",":
                where = self.line_of(self.pos)
                found = repr(separator) if separator else "end of file"
                raise UserError(f"{self.path}:{where}: invalid JSON in array: expected ',' or ']', found {found}")
            self.pos += 1
            self.skip_whitespace()


def parse_jsonl_block(path: str, first_line: int, block: bytes) -> Iterator[tuple[int, object]]:
    """Parse a block of whole JSON Lines rows with `jsonlines` (orjson as its parser); blank lines are not rows."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return _parse_jsonl_lines(path, first_line, block.split(b"\n"))  # finds and names the line
    return _parse_jsonl_lines(path, first_line, text.split("\n"))


def _parse_jsonl_lines(path: str, first_line: int, lines: list[str] | list[bytes]) -> Iterator[tuple[int, object]]:
    """Rows of `lines`, each with its line number; only the non-blank lines go to the reader, one `read` each."""
    numbered = [(first_line + index, line) for index, line in enumerate(lines) if line and not line.isspace()]
    reader = jsonlines.Reader([line for _, line in numbered], loads=orjson.loads)
    for line_no, _ in numbered:
        try:
            value = reader.read(allow_none=True)
        except jsonlines.InvalidLineError as err:
            if isinstance(err.__cause__, UnicodeDecodeError):
                raise UserError(f"{path}:{line_no}: not UTF-8 text (convert the file to UTF-8 first)") from None
            value = loads_rejected(err.line)  # the standard library decides, and explains, what orjson rejects
        yield line_no, value
