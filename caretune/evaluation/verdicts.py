"""Reading a grader's verdict strictly: a leading reasoning block stripped, then exactly one JSON object with the asked
key, whole or in one fenced block; anything else is ambiguous or missing, with the reason."""

from __future__ import annotations

import json
import re

FENCED = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)
FORMAT_REMINDER = (
    'Your reply did not hold exactly one verdict. Reply again with exactly one JSON object with the key "{field}" '
    '(and "explanation"), and nothing else.'
)


def same_value(value: object, expected: object) -> bool:
    """Equal and of the same type (so 1 is not True, and "true" is not True)."""
    return type(value) is type(expected) and value == expected


def answer_part(text: str) -> str | None:
    """The reply without a leading reasoning block: after a `<think>…</think>` that opens it, or after a lone `</think>`
    (a template that opened the block in the prompt). None while the reply never left its reasoning. A tag anywhere
    else is text (an explanation may quote one)."""
    stripped = text.lstrip()
    if stripped.startswith("<think>"):
        end = stripped.find("</think>")
        return None if end == -1 else stripped[end + len("</think>") :]
    close = text.find("</think>")
    if close != -1 and "<think>" not in text[:close]:
        return text[close + len("</think>") :]
    return text


def json_objects(text: str) -> list[tuple[int, int, object]]:
    """Every top-level JSON value opened by "{" in `text`, as (start, end, value), outermost only."""
    decoder = json.JSONDecoder()
    found, position = [], text.find("{")
    while position != -1:
        try:
            value, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        found.append((position, end, value))
        position = text.find("{", end)
    return found


def read_verdict(text: str, field: str, allowed: tuple) -> tuple[dict | None, str]:
    """The verdict in a grader's reply, read strictly, and why not when there is none (`ambiguous: …` when the reply
    holds more than one candidate). After a leading reasoning block, the reply must be one JSON object, whole or in
    one fenced block, with `field` set to an allowed value; a second verdict-shaped object anywhere (a draft, a
    hypothetical) makes it ambiguous, and an object is never read from inside another."""
    rest = answer_part(text)
    if rest is None:
        return None, "the reply never left its reasoning block"
    body = rest.strip()
    try:
        whole = json.loads(body)
    except ValueError:
        whole = None
    if whole is not None:
        return checked_verdict(whole, field, allowed)
    fences = list(FENCED.finditer(body))
    outside = FENCED.sub(" ", body)
    shaped = [value for _, _, value in json_objects(outside) if isinstance(value, dict) and field in value]
    if len(fences) == 1:
        if shaped:
            return None, f"ambiguous: a fenced verdict and {len(shaped)} more object(s) with {field!r} outside it"
        try:
            fenced = json.loads(fences[0].group(1))
        except ValueError:
            return None, "the fenced block is not JSON"
        return checked_verdict(fenced, field, allowed)
    if len(fences) > 1:
        return None, f"ambiguous: {len(fences)} fenced blocks"
    if shaped:
        return None, f"the verdict object is neither the whole reply nor in a fenced block ({len(shaped)} found)"
    return None, "no verdict in the reply"


def checked_verdict(value: object, field: str, allowed: tuple) -> tuple[dict | None, str]:
    if not isinstance(value, dict):
        return None, "the reply is JSON but not an object"
    if not any(same_value(value.get(field), option) for option in allowed):
        return None, f"{field!r} is {value.get(field)!r}, not one of {list(allowed)}"
    explanation = value.get("explanation")
    return {field: value[field], "explanation": explanation if isinstance(explanation, str) else None}, ""


def valid_verdict(verdict: object, field: str, allowed: tuple) -> bool:
    """Whether a cached verdict is one a good reply would have given."""
    return (
        isinstance(verdict, dict)
        and any(same_value(verdict.get(field), value) for value in allowed)
        and isinstance(verdict.get("explanation"), (str, type(None)))
    )
