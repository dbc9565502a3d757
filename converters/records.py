"""What every source shares: the Skip verdict, skip reasons and the dedupe key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
NON_STRING_FIELD = "non_string_field"
EMPTY_AFTER_STRIP = "empty_after_strip"
BAD_ROLE_ORDER = "bad_role_order"
UNKNOWN_SHAPE = "unknown_shape"
INVALID_UNICODE = "invalid_unicode"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Skip:
    """A row that is not written, and why."""

    reason: str
    detail: str = ""


# Whitespace anywhere and punctuation at the end (ASCII and full-width) do not make a query new.
_TRAILING_PUNCTUATION = " \t\r\n\u3000.,!?;:~…。，！？；：～、"
_blake2b = hashlib.blake2b


def normalise_query(text: str) -> str:
    """Canonical form of a patient query for dedupe: case-folded, whitespace removed, trailing
    punctuation removed, so "头疼怎么办？", "头疼 怎么办?" and "头疼怎么办" are one query."""
    return "".join(text.casefold().split()).rstrip(_TRAILING_PUNCTUATION)


def query_key(text: str) -> int:
    """Stable 64-bit key of `normalise_query(text)`: same on every run and machine (blake2b, not hash())."""
    return int.from_bytes(_blake2b(normalise_query(text).encode(), digest_size=8).digest(), "big")


def string_field(row: dict, name: str) -> str | Skip:
    """The stripped string value of `name`, or the Skip that explains why there is none."""
    if name not in row or row[name] is None:
        return Skip(MISSING_FIELD, name)
    value = row[name]
    if not isinstance(value, str):
        return Skip(NON_STRING_FIELD, f"{name} is {type(value).__name__}")
    value = value.strip()
    if not value:
        return Skip(EMPTY_AFTER_STRIP, name)
    return value
