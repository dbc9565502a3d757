"""The one masker of personal data, for training data, logs and the judge alike: phone numbers (mainland
mobiles, landlines with their area code, 400/800 lines), ID-card numbers and e-mail addresses, in ASCII or
full-width digits, whole or split by spaces or hyphens."""

from __future__ import annotations

import re
from collections import Counter

PHONE = "phone"
ID_CARD = "id_card"
EMAIL = "email"

PII_KINDS = (PHONE, ID_CARD, EMAIL)
MASKS = {PHONE: "[电话]", ID_CARD: "[身份证号]", EMAIL: "[邮箱]"}

# Full-width digits, hyphens and spaces read as their ASCII forms. One character for one, so a match's span in the
# read text is its span in the original, which is where the mask goes.
_ASCII = str.maketrans("０１２３４５６７８９－＋（）\u3000\u2010\u2011\u2012\u2013\u2014", "0123456789-+() -----")
_WIDE = "０１２３４５６７８９"
_SEP = r"[- ]?"  # one space or hyphen between digit groups
# A run of digit groups with single spaces or hyphens between them, optionally after +86 or a bracketed area code.
# Phone numbers are found among its groups by their digits alone (`_PHONE_DIGITS`), so "138 1234 5678",
# "138-1234-5678" and "13812345678" are one number, and a year after a number ("13812345678 2023") is not part of it.
_RUN = re.compile(r"(?<![0-9])\+?(?:\(0[0-9]{2,3}\) ?)?[0-9]+(?:[- ][0-9]+)*(?![0-9])")
_GROUP = re.compile(r"[0-9]+")
MAX_PHONE_DIGITS = 13  # 86 and a mobile number
MIN_GROUP_DIGITS = 3  # a phone number's groups ("138 1234 5678", "010-62345678", "400-123-4567"); "86" may lead
_PHONE_DIGITS = re.compile(
    r"(?:86)?1[3-9][0-9]{9}"  # mobile
    r"|0(?:10|2[0-9]|[3-9][0-9]{2})[2-9][0-9]{6,7}"  # landline: area code, then a 7- or 8-digit number
    r"|[48]00[0-9]{7}"  # 400/800 service lines
)
_ID_CARD = re.compile(
    rf"(?<![0-9])[1-9][0-9]{{5}}{_SEP}(?:18|19|20)[0-9]{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]){_SEP}[0-9]{{3}}[0-9Xx](?![0-9A-Za-z])"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Every match has an "@", a full-width digit, a bracketed area code, or a run of 10+ digits and separators: one
# cheap scan rules most texts out. Each branch starts with a literal character, so `re` skips to candidates in C.
PII_SIGNS = re.compile(
    "|".join(("@", r"\(0", "（0", *_WIDE, *(digit + r"[- 0-9－—–‐‑‒\u3000]{8,}[0-9Xx]" for digit in "0123456789")))
)


def _phone_spans(read: str) -> list[tuple[int, int]]:
    """(start, end) of each phone number in `read`: in every run of digit groups, the longest run of whole groups
    from each group on whose digits are a phone number; a "+" or bracket just before it is part of it."""
    spans = []
    for run in _RUN.finditer(read):
        groups = [(m.start(), m.end()) for m in _GROUP.finditer(read, run.start(), run.end())]
        first = 0
        while first < len(groups):
            digits, best = "", None
            for last in range(first, len(groups)):
                group = read[groups[last][0] : groups[last][1]]
                if len(group) < MIN_GROUP_DIGITS and not (last == first and group == "86"):
                    break  # "1 3 5 7 9 11", "0-20 3-5": scores and ranges, not a phone number
                digits += group
                if len(digits) > MAX_PHONE_DIGITS:
                    break
                if _PHONE_DIGITS.fullmatch(digits):
                    best = last
            if best is None:
                first += 1
                continue
            start = groups[first][0]
            while start > run.start() and read[start - 1] in "+(":
                start -= 1
            end = groups[best][1]
            if read[start] == "(" and read[end : end + 1] == ")":
                end += 1
            spans.append((start, end))
            first = best + 1
    return spans


def _spans(read: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every piece of personal data in `read` (ASCII-read text), earliest first, not overlapping."""
    found = [(m.start(), m.end(), EMAIL) for m in _EMAIL.finditer(read)] if "@" in read else []
    found += [(m.start(), m.end(), ID_CARD) for m in _ID_CARD.finditer(read)]
    found += [(start, end, PHONE) for start, end in _phone_spans(read)]
    found.sort()
    kept: list[tuple[int, int, str]] = []
    for span in found:
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept


def mask_pii(text: str) -> tuple[str, Counter | None]:
    """Return `text` with personal data replaced by placeholders, and a count per kind (None if none)."""
    if not PII_SIGNS.search(text):
        return text, None
    spans = _spans(text.translate(_ASCII))
    if not spans:
        return text, None
    counts: Counter = Counter()
    pieces, start = [], 0
    for begin, end, kind in spans:
        pieces += (text[start:begin], MASKS[kind])
        counts[kind] += 1
        start = end
    pieces.append(text[start:])
    return "".join(pieces), counts


def find_phone(text: str) -> str | None:
    """The first phone number in `text` (mobile, landline with area code, 400/800), as written; None when none."""
    if not PII_SIGNS.search(text):
        return None
    spans = _phone_spans(text.translate(_ASCII))
    return text[spans[0][0] : spans[0][1]] if spans else None


_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{4,}[0-9Xx]")  # six or more digits: the tail of a number cut from a longer text
# an e-mail's end cut from its start; a URL's host (after "//") is left as it is
_EMAIL_TAIL = re.compile(r"(?<![/\w.@%+-])[A-Za-z0-9._%+-]*@?[A-Za-z0-9.-]+\.(?:com|cn|net|org|edu|gov)\b")


def mask_quote(text: str) -> str:
    """A piece of a row quoted in a log (the rejects' details): personal data masked, and also what masking a whole
    text would catch but a cut piece hides: any run of six or more digits (full-width ones too), and an e-mail's domain."""
    masked, _ = mask_pii(text)
    read = masked.translate(_ASCII)
    runs = [match.span() for match in _DIGIT_RUN.finditer(read)]
    for begin, end in reversed(runs):
        masked = masked[:begin] + "#" * (end - begin) + masked[end:]
    return _EMAIL_TAIL.sub("[邮箱]", masked)
