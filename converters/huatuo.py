"""HuatuoGPT2 rows -> LLaMA-Factory sharegpt records.

Accepted shapes:
- HuatuoGPT2-SFT-GPT4-140K: `{"id", "conversations": [{"from": "human"|"gpt", "value"}, ...]}`
- HuatuoGPT-sft-data-v1:    `{"data": ["问：…", "答：…", ...]}`
"""

from __future__ import annotations

from collections import Counter

from caretune.basics.pii import mask_pii
from converters.jsoncodec import dumps_bytes
from converters.names import HUATUO_DATASET, HUATUO_EVAL_DATASET, MEDICAL_SYSTEM_PROMPT
from converters.records import (
    BAD_ROLE_ORDER,
    EMPTY_AFTER_STRIP,
    MISSING_FIELD,
    NON_STRING_FIELD,
    NOT_AN_OBJECT,
    UNKNOWN_SHAPE,
    Skip,
)
from converters.turns import TRAIN_ALL

NAME = "huatuo"
DATASET = HUATUO_DATASET
EVAL_DATASET = HUATUO_EVAL_DATASET
TRAIN_ANSWERS = TRAIN_ALL  # medical dialogue: every answer trains, each on its served prompt (converters/turns.py)

HUMAN, GPT = "human", "gpt"
TRAILING_HUMAN_TURN = "trailing_human_turn_dropped"
OWN_SYSTEM_REPLACED = "own_system_turn_replaced"  # a medical row's own system turn gives way to the medical prompt
SYSTEM = "system"
_V1_PREFIXES = (("问：", "问:"), ("答：", "答:"))


def registry_entry(layout: str | None = None) -> dict:
    """dataset_info.json entry (without file_name): LLaMA-Factory's sharegpt columns and tags.

    Every layout is the same here: HuatuoGPT2 rows always carry the medical prompt as `system`."""
    return {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": HUMAN, "assistant_tag": GPT},
    }


def encode(record: dict) -> bytes:
    """The record as compact UTF-8 JSON (`dumps_bytes`)."""
    return dumps_bytes(record)


def convert(row: object, layout: str | None = None) -> dict | Skip:
    """One Huatuo row -> `{"conversations": [...], "system": ...}` with strictly alternating turns.

    A trailing unanswered human turn is dropped, and a leading system turn gives way to the medical prompt; the
    record then carries `_notes` (removed by the pipeline before writing) so the report can count them.
    """
    if not isinstance(row, dict):
        return Skip(NOT_AN_OBJECT, type(row).__name__)
    notes = []
    if "conversations" in row:
        own_system, turns = sharegpt_turns(row["conversations"])
        if own_system is not None:
            notes.append(OWN_SYSTEM_REPLACED)
    elif "data" in row:
        turns = _v1_turns(row["data"])
    else:
        return Skip(MISSING_FIELD, "conversations")
    if isinstance(turns, Skip):
        return turns
    return answered_record(turns, MEDICAL_SYSTEM_PROMPT, notes)


def answered_record(turns: list[dict], system: str, notes: list[str] | None = None) -> dict | Skip:
    """The sharegpt record of alternating turns, a trailing unanswered human turn dropped (then `_notes` says so,
    with any `notes` given)."""
    notes = list(notes or ())
    if turns and turns[-1]["from"] == HUMAN:
        turns = turns[:-1]
        notes.append(TRAILING_HUMAN_TURN)
    if not turns:
        return Skip(BAD_ROLE_ORDER, "no answered human turn")
    record = {"conversations": turns, "system": system}
    if notes:
        record["_notes"] = notes
    return record


def sharegpt_turns(conversations: object) -> tuple[str | None, list[dict] | Skip]:
    """The row's own system prompt (a leading `system` turn; None without one) and its alternating human/gpt turns."""
    if not isinstance(conversations, list):
        return None, Skip(UNKNOWN_SHAPE, f"conversations is {type(conversations).__name__}")
    system = None
    if conversations and isinstance(conversations[0], dict) and conversations[0].get("from") == SYSTEM:
        value = conversations[0].get("value")
        if not isinstance(value, str):
            return None, Skip(NON_STRING_FIELD, "turn 0 (system)")
        system, conversations = value.strip(), conversations[1:]
    return system, _alternating(conversations)


def _alternating(conversations: list) -> list[dict] | Skip:
    if not conversations:
        return Skip(EMPTY_AFTER_STRIP, "conversations")
    turns = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            return Skip(UNKNOWN_SHAPE, f"turn {index} is {type(turn).__name__}")
        role, value = turn.get("from"), turn.get("value")
        if role is None or value is None:
            return Skip(MISSING_FIELD, f"turn {index} {'from' if role is None else 'value'}")
        if not isinstance(role, str) or not isinstance(value, str):
            return Skip(NON_STRING_FIELD, f"turn {index}")
        expected = HUMAN if index % 2 == 0 else GPT
        if role != expected:
            return Skip(BAD_ROLE_ORDER, f"turn {index} is {role!r}, expected {expected!r}")
        value = value.strip()
        if not value:
            return Skip(EMPTY_AFTER_STRIP, f"turn {index}")
        turns.append({"from": role, "value": value})
    return turns


def _v1_turns(data: object) -> list[dict] | Skip:
    if not isinstance(data, list):
        return Skip(UNKNOWN_SHAPE, f"data is {type(data).__name__}")
    if not data:
        return Skip(EMPTY_AFTER_STRIP, "data")
    turns = []
    for index, text in enumerate(data):
        if not isinstance(text, str):
            return Skip(NON_STRING_FIELD, f"data[{index}]")
        role = HUMAN if index % 2 == 0 else GPT
        prefixes = _V1_PREFIXES[index % 2]
        other = _V1_PREFIXES[1 - index % 2]
        text = text.strip()
        if text.startswith(other):
            return Skip(BAD_ROLE_ORDER, f"data[{index}] starts with {text[:2]!r}")
        for prefix in prefixes:
            if text.startswith(prefix):
                text = text[len(prefix) :].strip()
                break
        if not text:
            return Skip(EMPTY_AFTER_STRIP, f"data[{index}]")
        turns.append({"from": role, "value": text})
    return turns


def first_query(record: dict) -> str:
    """The patient's opening question: the dedupe and split key."""
    return record["conversations"][0]["value"]


def pairs(record: dict) -> list[tuple[str, str]]:
    """The `(question, answer)` turns."""
    turns = record["conversations"]
    return [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns), 2)]


def dialogue(record: dict) -> tuple[str, list[tuple[str, str]]]:
    """The system prompt and `(question, answer)` turns as LLaMA-Factory renders the record."""
    return record["system"], pairs(record)


def window(record: dict, first: int, last: int) -> dict:
    """The record holding turns `first`..`last` (0-based, inclusive), its system prompt kept."""
    if first == 0 and 2 * last + 2 == len(record["conversations"]):
        return record
    return {**record, "conversations": record["conversations"][2 * first : 2 * last + 2]}


def with_pairs(record: dict, turns: list[tuple[str, str]]) -> dict:
    """`record` with its turns' text replaced."""
    conversations = [
        {"from": role, "value": value} for question, answer in turns for role, value in ((HUMAN, question), (GPT, answer))
    ]
    return {**record, "conversations": conversations}


def scrub(record: dict) -> tuple[dict, Counter | None]:
    """Mask personal data in every human turn and in a row's own system prompt (the medical one holds none); the
    counts are None when nothing was masked."""
    total: Counter = Counter()
    system, counts = mask_pii(record.get("system") or "")
    if counts:
        total.update(counts)
        record = {**record, "system": system}
    turns = []
    for turn in record["conversations"]:
        if turn["from"] == HUMAN:
            masked, counts = mask_pii(turn["value"])
            if counts:
                total.update(counts)
                turn = {**turn, "value": masked}
        turns.append(turn)
    if not total:
        return record, None
    return {**record, "conversations": turns}, total
