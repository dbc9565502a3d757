"""Masking of personal data in patient text: mainland mobile numbers, ID-card numbers, e-mail."""

from __future__ import annotations

import re
from collections import Counter

PHONE = "phone"
ID_CARD = "id_card"
EMAIL = "email"

PII_KINDS = (PHONE, ID_CARD, EMAIL)
MASKS = {PHONE: "[电话]", ID_CARD: "[身份证号]", EMAIL: "[邮箱]"}

# One alternation so each text is scanned once. Digits around a match are excluded so that
# parts of longer numbers are left alone; the ID-card pattern checks region, date and check digit shape.
_PII = re.compile(
    r"(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
    r"|(?<![0-9])(?P<id_card>[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx])(?![0-9A-Za-z])"
    r"|(?<![0-9])(?:\+?86[- ]?)?(?P<phone>1[3-9][0-9](?:[- ]?[0-9]{4}){2})(?![0-9])"
)
# Every match has an "@" or a run of 11+ digits, spaces and dashes: one cheap scan rules most texts out. Each
# branch starts with a literal character, so `re` skips to candidates in C (a [0-9] branch would stop that).
_CHEAP_SIGNS = re.compile("|".join(("@", *(digit + r"[- 0-9]{9,}[0-9Xx]" for digit in "0123456789"))))


def mask_pii(text: str) -> tuple[str, Counter | None]:
    """Return `text` with personal data replaced by placeholders, and a count per kind (None if none)."""
    if not _CHEAP_SIGNS.search(text):
        return text, None
    counts: Counter = Counter()

    def replace(match: re.Match) -> str:
        kind = match.lastgroup
        counts[kind] += 1
        return MASKS[kind]

    masked = _PII.sub(replace, text)
    return masked, counts or None


_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{4,}[0-9Xx]")  # six or more digits: the tail of a number cut from a longer text
# an e-mail's end cut from its start; a URL's host (after "//") is left as it is
_EMAIL_TAIL = re.compile(r"(?<![/\w.@%+-])[A-Za-z0-9._%+-]*@?[A-Za-z0-9.-]+\.(?:com|cn|net|org|edu|gov)\b")


def mask_quote(text: str) -> str:
    """A piece of a row quoted in a log (the rejects' details): personal data masked, and also what masking a whole
    text would catch but a cut piece hides: any run of six or more digits, and an e-mail's domain."""
    masked, _ = mask_pii(text)
    masked = _DIGIT_RUN.sub(lambda match: "#" * len(match.group(0)), masked)
    return _EMAIL_TAIL.sub("[邮箱]", masked)
