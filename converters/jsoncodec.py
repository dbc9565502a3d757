"""JSON in and out, with orjson as an optional accelerator and the standard library as the reference.

orjson arrives with LLaMA-Factory (through gradio). When it is missing, or rejects a line the
standard library accepts (NaN, integers beyond 64 bits), the standard library decides, so a
row's fate never depends on which is installed. Output is byte-identical either way: compact
separators, non-ASCII kept as UTF-8.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # the C string encoder behind ensure_ascii=False

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by forcing `orjson = None` in tests
    orjson = None


class InvalidJson(str):
    """A row that does not parse; the text is the parser's message."""


class UnencodableText(ValueError):
    """A record holds text that cannot be written as UTF-8 (a lone surrogate)."""


def loads_text(text: str) -> object:
    """Parse one JSON Lines row; orjson first, and the standard library decides (and explains) what orjson rejects.

    Raises json.JSONDecodeError when the row is not JSON.
    """
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # let the standard library decide, and explain
    return json.loads(text)


def invalid_json(err: json.JSONDecodeError) -> InvalidJson:
    """The skip detail of a row that does not parse."""
    return InvalidJson(f"{err.msg} (column {err.colno})")


def dumps(value: object) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`, faster for str/list/dict records."""
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return "{" + ",".join(encode_basestring(key) + ":" + dumps(item) for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dumps_bytes(record: dict) -> bytes:
    """A record as compact UTF-8 JSON; UnencodableText for text with lone surrogates."""
    if orjson is not None:
        try:
            return orjson.dumps(record)
        except TypeError:
            pass  # fall through: the standard library path names the problem the same way
    try:
        return dumps(record).encode("utf-8")
    except UnicodeEncodeError as err:
        raise UnencodableText(f"text holds an unpaired surrogate at position {err.start}") from None
