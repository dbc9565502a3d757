"""Quality filters over one dialogue's `(question, answer)` turns: small pure functions with stable reason names.

Each filter returns a detail string when a row should be skipped, else None. A dialogue is skipped
at the first answer (or question) a filter rejects. Thresholds are the constants below.

- truncated_answer: the answer does not end with sentence-final punctuation (。！？!?…~ or a full stop),
  after closing quotes and brackets; ChatMed's answers were generated under a 512-token cap, so an answer
  cut there stops mid-sentence.
- ai_self_reference: the answer speaks of itself as an AI ("作为一个AI助手…", "作为人工智能…", "as an AI").
- short_answer: fewer than MIN_ANSWER_CHARS characters (whitespace not counted).
- answer_repeats_question: the answer, normalised as queries are for dedupe, equals the question or is
  contained in it (answers longer than twice the question plus REPEAT_SLACK_CHARS are not compared).
- contact_or_ad: a URL, a WeChat or QQ id, a phone number (mobile, landline with area code, 400/800;
  short numbers such as 120 are fine) or a street address ("地址：", "…路12号") in the answer.
- degenerate_repetition: the same clause (2+ characters between ，。！？ or line breaks) DEGENERATE_CLAUSE_REPEATS
  times in a row, or one letter or character DEGENERATE_CHAR_RUN times in a row. (A short unit repeated
  without punctuation, "好的好的好的…", is not caught.)

Wrappers: a question carrying its training prompt's markers (`<s>`, `</s>`, a leading 问：/Q:, a trailing
答：/A:) is stripped of them, not skipped (`strip_wrappers`).
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Callable

from converters.choices import (
    AI_SELF_REFERENCE,
    ANSWER_REPEATS_QUESTION,
    CONTACT_OR_AD,
    DEGENERATE_REPETITION,
    SHORT_ANSWER,
    TRUNCATED_ANSWER,
)
from converters.records import normalise_query

WRAPPER_STRIPPED = "wrapper_stripped"

MIN_ANSWER_CHARS = 10
REPEAT_SLACK_CHARS = 20
DEGENERATE_CLAUSE_REPEATS = 4
DEGENERATE_CHAR_RUN = 8

_FINAL = set("。！？!?…~～")
_CLOSING = "”’\"'）)】」』》]】 \t\r\n"
_AI_SELF = re.compile(
    r"作为(一个|一名|一位|一款)?(AI|ai|Ai|人工智能|语言模型|虚拟助手|机器人|智能助手)"
    r"|我(只)?是(一个|一名)?(AI|ai|人工智能|语言模型|机器人)|as an AI|AI language model"
)
_CONTACT_HINT = re.compile(r"http|www\.|\.com|\.cn|\.net|\.org|微信|VX|vx|Vx|QQ|qq|地址[:：]|路[0-9]|街[0-9]|道[0-9]")
_CONTACT = re.compile(
    r"https?://\S+|www\.[A-Za-z0-9-]+\.\S+|[A-Za-z0-9-]+\.(com|cn|net|org)\b"  # URLs
    r"|(微信|VX|vx|Vx)(号|公众号)?[:：]?\s*[A-Za-z][-_A-Za-z0-9]{5,19}|加(我)?(微信|VX|vx|QQ|qq)"  # WeChat ids
    r"|(QQ|qq)(号|群)?[:：]?\s*[1-9][0-9]{4,11}"  # QQ numbers
    r"|地址[:：]|(路|街|道)[0-9]{1,5}号"  # street addresses
)
_URL = re.compile(r"https?://\S+|www\.[A-Za-z0-9-]+\.\S+")
_NUMBER_TAIL = r"[0-9 -]{5,}[0-9]"
_NUMBER = re.compile("[0-9]" + _NUMBER_TAIL)  # then classified: mobile, landline, 400/800
# Every contact match contains a hint or a number of 7+ characters: one scan rules most answers out. Each
# branch starts with a literal character, so `re` skips to candidates in C (a [0-9] branch would stop that).
_CONTACT_SIGNS = re.compile("|".join((_CONTACT_HINT.pattern, *(digit + _NUMBER_TAIL for digit in "0123456789"))))
_PHONE = re.compile(r"(86)?1[3-9][0-9]{9}|0[1-9][0-9]{1,2}[2-9][0-9]{6,7}|[48]00[0-9]{7}")
_CHAR_RUN = re.compile(r"(.)" + r"\1" * (DEGENERATE_CHAR_RUN - 1))  # spelled out: twice as fast as {n,}
_RUN_STRIDE = DEGENERATE_CHAR_RUN // 2
_EQUAL_NEIGHBOURS = re.compile(r"(.)\1", re.DOTALL)
_WRAPPER_START = re.compile(r"^\s*(<s>)?\s*(问[：:]|[Qq][：:])?\s*")
_WRAPPER_END = re.compile(r"\s*(答[：:]|[Aa][：:])?\s*(</s>)?\s*$")


def truncated_answer(question: str, answer: str) -> str | None:
    """The answer does not end a sentence (no final punctuation, emoji or full stop): it was cut off."""
    tail = answer.rstrip(_CLOSING)
    if not tail:
        return "no text"
    last = tail[-1]
    if last in _FINAL or unicodedata.category(last) == "So":  # a closing emoji ends a sentence too
        return None
    if last == "." and not (len(tail) > 1 and tail[-2].isdigit()):  # "3." is a list number, not a full stop
        return None
    return f"ends with {tail[-12:]!r}"


def ai_self_reference(question: str, answer: str) -> str | None:
    """The answer speaks of itself as an AI (“作为一个AI…”)."""
    match = _AI_SELF.search(answer)
    return f"says {match.group(0)!r}" if match else None


def short_answer(question: str, answer: str) -> str | None:
    """Fewer than MIN_ANSWER_CHARS characters of answer, whitespace aside."""
    length = len("".join(answer.split()))
    return f"{length} characters (< {MIN_ANSWER_CHARS})" if length < MIN_ANSWER_CHARS else None


def answer_repeats_question(question: str, answer: str) -> str | None:
    """The answer only restates the question (normalised, equal or contained in it)."""
    if len(answer) > 2 * len(question) + REPEAT_SLACK_CHARS:
        return None  # too long to be a restatement (and normalising a long answer is the costly part)
    said, asked = normalise_query(answer), normalise_query(question)
    if said and (said == asked or said in asked):
        return "the answer restates the question"
    return None


def contact_or_ad(question: str, answer: str) -> str | None:
    """The answer carries a URL, a WeChat/QQ id, or a mobile, landline or 400/800 number."""
    if not _CONTACT_SIGNS.search(answer):
        return None
    if _CONTACT_HINT.search(answer) and (match := _CONTACT.search(answer)):
        return f"contains {match.group(0)[:24]!r}"
    for match in _NUMBER.finditer(answer):
        digits = "".join(c for c in match.group(0) if c.isdigit())
        if _PHONE.fullmatch(digits):
            return f"contains {match.group(0)[:24]!r}"
    return None


def degenerate_repetition(question: str, answer: str) -> str | None:
    """The answer repeats one clause over and over, or one character in a long run."""
    split = answer.replace("。", "，").replace("！", "，").replace("？", "，").replace("\n", "，").split("，")
    clauses = list(filter(None, split))
    if any(map(operator.eq, clauses, clauses[1:])):  # some clause follows itself: look for a run of it
        run, previous = 1, None
        for clause in clauses:
            run = run + 1 if clause == previous and len(clause) >= 2 else 1
            previous = clause
            if run >= DEGENERATE_CLAUSE_REPEATS:
                return f"repeats {clause[:24]!r} {run} times"
    return char_run(answer)


def char_run(text: str) -> str | None:
    """One letter or character DEGENERATE_CHAR_RUN times in a row, described; None when there is none.

    Such a run holds two equal characters at consecutive multiples of _RUN_STRIDE (half the run), so a scan of
    every _RUN_STRIDE-th character, a quarter of the text, rules most texts out before the full scan."""
    if not _EQUAL_NEIGHBOURS.search(text[::_RUN_STRIDE]):
        return None
    for match in _CHAR_RUN.finditer(text):
        if match.group(1).isalpha():  # a row of dashes or dots is layout, not degeneration
            return f"repeats {match.group(1)!r} {DEGENERATE_CHAR_RUN}+ times"
    return None


def mask_contacts(text: str) -> str:
    """`text` with phone numbers (mobile, landline, 400/800) and URLs replaced, for showing rows to people."""
    text = _URL.sub("[网址]", text)
    return _NUMBER.sub(lambda m: "[电话]" if _PHONE.fullmatch("".join(c for c in m.group(0) if c.isdigit())) else m.group(0), text)


# In the order they are applied; a row is counted under the first that rejects it.
FILTERS: dict[str, Callable[[str, str], str | None]] = {
    SHORT_ANSWER: short_answer,
    ANSWER_REPEATS_QUESTION: answer_repeats_question,
    TRUNCATED_ANSWER: truncated_answer,
    AI_SELF_REFERENCE: ai_self_reference,
    CONTACT_OR_AD: contact_or_ad,
    DEGENERATE_REPETITION: degenerate_repetition,
}


# Filters that can only reject an answer one of these patterns matches (each branch literal-first). One scan
# with the union of the enabled filters' screens rules most answers out of all of them at once.
_SCREENS = {AI_SELF_REFERENCE: _AI_SELF, CONTACT_OR_AD: _CONTACT_SIGNS}


def first_rejection(pairs: list[tuple[str, str]], enabled: frozenset[str]) -> tuple[str, str] | None:
    """`(reason, detail)` of the first enabled filter that rejects any turn, else None."""
    checks, screen = _enabled_checks(enabled)
    if len(pairs) == 1:  # the common case, without the turn loop
        question, answer = pairs[0]
        screened = screen is not None and not screen.search(answer)
        for name, check in checks:
            if screened and name in _SCREENS:
                continue
            detail = check(question, answer)
            if detail is not None:
                return name, detail
        return None
    screened = [screen is not None and not screen.search(answer) for _, answer in pairs]
    for name, check in checks:
        for index, (question, answer) in enumerate(pairs):
            if screened[index] and name in _SCREENS:
                continue
            detail = check(question, answer)
            if detail is not None:
                return name, f"turn {index + 1}: {detail}"
    return None


@functools.cache
def _enabled_checks(enabled: frozenset[str]) -> tuple[tuple[tuple[str, Callable[[str, str], str | None]], ...], re.Pattern | None]:
    """The enabled filters in order, and the union of their screens (None when none has one)."""
    checks = tuple((name, check) for name, check in FILTERS.items() if name in enabled)
    screens = [_SCREENS[name].pattern for name, _ in checks if name in _SCREENS]
    return checks, (re.compile("|".join(screens)) if screens else None)


def strip_wrappers(question: str) -> str:
    """The question without its training prompt's markers (`<s>问：…答：</s>`); unchanged when it has none."""
    if not question or question[0] not in "<问Qq \t\r\n" and question[-1] not in "：:>\t\r\n ":
        return question  # the common case, checked cheaply
    return _WRAPPER_END.sub("", _WRAPPER_START.sub("", question, count=1), count=1)
