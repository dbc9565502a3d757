"""What every source shares: the Skip verdict, skip reasons and the dedupe key."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
NON_STRING_FIELD = "non_string_field"
EMPTY_AFTER_STRIP = "empty_after_strip"
BAD_ROLE_ORDER = "bad_role_order"
UNKNOWN_SHAPE = "unknown_shape"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Skip:
    """A row that is not written, and why."""

    reason: str
    detail: str = ""


def normalise_query(text: str) -> str:
    """Canonical form of a patient query for dedupe: NFKC, case-folded, whitespace removed."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def query_key(text: str) -> int:
    """Stable 64-bit key of a query: same on every run and machine (blake2b, not hash())."""
    digest = hashlib.blake2b(normalise_query(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


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
