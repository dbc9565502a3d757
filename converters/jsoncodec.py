"""JSON in and out through orjson, with the standard library as the reference where orjson says no.

A row orjson rejects (NaN, a lone surrogate escape) is parsed, or explained, by the standard library, so a
row's fate is the standard library's (orjson reads integers beyond 64 bits as floats, which only changes the
detail of a non_string_field skip). Output is compact UTF-8 JSON with non-ASCII kept, byte-identical to
`json.dumps(record, ensure_ascii=False, separators=(",", ":"))` for the text records caretune writes.
"""

from __future__ import annotations

import json

import orjson


class InvalidJson(str):
    """A row that does not parse; the text is the parser's message."""


class UnencodableText(ValueError):
    """A record holds text that cannot be written as UTF-8 (a lone surrogate)."""


def loads_rejected(text: str) -> object | InvalidJson:
    """What the standard library makes of a row orjson rejected: the value (NaN, integers beyond 64 bits),
    or the InvalidJson that explains why the row is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return invalid_json(err)


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
