"""JSON in and out through orjson, with the standard library as the reference where orjson says no.

A row orjson rejects (NaN, integers beyond 64 bits) is parsed, or explained, by the standard library, so a
row's fate is the standard library's. Output is compact UTF-8 JSON with non-ASCII kept, byte-identical to
`json.dumps(record, ensure_ascii=False, separators=(",", ":"))` for the text records caretune writes.
"""

from __future__ import annotations

import json

import orjson


class InvalidJson(str):
    """A row that does not parse; the text is the parser's message."""


class UnencodableText(ValueError):
    """A record holds text that cannot be written as UTF-8 (a lone surrogate)."""


def loads_text(text: str) -> object:
    """Parse one JSON Lines row; the standard library decides (and explains) what orjson rejects.

    Raises json.JSONDecodeError when the row is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def invalid_json(err: json.JSONDecodeError) -> InvalidJson:
    """The skip detail of a row that does not parse."""
    return InvalidJson(f"{err.msg} (column {err.colno})")


def dumps_bytes(record: dict) -> bytes:
    """A record as compact UTF-8 JSON; UnencodableText for text with lone surrogates."""
    try:
        return orjson.dumps(record)
    except TypeError:  # a lone surrogate or an integer beyond 64 bits: the standard library names the problem
        pass
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as err:
        raise UnencodableText(f"text holds an unpaired surrogate at position {err.start}") from None
