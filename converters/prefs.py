"""Preference pairs -> LLaMA-Factory ranking records (`"ranking": true`), for DPO after SFT.

Accepted shapes, told apart row by row:
- MedicalGPT's: `{"conversations": [{"from": "system"?}, {"from": "human"}, {"from": "gpt"}, ..., {"from": "human"}],
  "chosen": str, "rejected": str}` (the prompt ends with the question both answers answer);
- shibing624/medical's reward split: `{"question", "response_chosen", "response_rejected"}`.

The record is `{"conversations": [...prompt turns...], "chosen": {"from": "gpt", "value"}, "rejected": {...},
"system"}`. A medical set carries the medical system prompt unless the row brings its own system turn, which is kept;
a general set keeps its own or none (converters/general.py says why). The quality filters run on the prompt's turns
with the chosen answer (a failing pair is skipped), and on the rejected answer (counted under `notes`, kept: a bad
answer is what a rejected answer is for).

Care reminders are never appended, to either answer. A reminder added to the chosen answer alone would make the
sentence itself the difference DPO learns from, a preference no rater expressed; SFT already teaches it. The report's
`care` counts how often the chosen answers advise care as written.
"""

from __future__ import annotations

import types

from converters.huatuo import GPT, HUMAN, encode, scrub, sharegpt_turns  # noqa: F401 (the pipeline calls encode and scrub here)
from converters.huatuo import pairs as turn_pairs
from converters.names import (
    GENERAL_PREFS_DATASET,
    GENERAL_PREFS_EVAL_DATASET,
    MEDICAL_PREFS_DATASET,
    MEDICAL_PREFS_EVAL_DATASET,
    MEDICAL_SYSTEM_PROMPT,
)
from converters.records import EMPTY_AFTER_STRIP, MISSING_FIELD, NON_STRING_FIELD, NOT_AN_OBJECT, Skip, string_field
from converters.turns import TRAIN_LAST, plan_rows

NAME = "prefs"
DATASET = MEDICAL_PREFS_DATASET
EVAL_DATASET = MEDICAL_PREFS_EVAL_DATASET
MEDICAL = True  # the medical system prompt where a row has none
CARE_REMINDERS = False  # never appended: see the module's docstring
PREFERENCE = True  # ranking rows: DPO's data, refused by SFT
TRAIN_ANSWERS = TRAIN_LAST  # one row a pair: the pair's answers answer the prompt's last question
SAME_ANSWERS = "chosen_equals_rejected"
REJECTED_PREFIX = "rejected_"  # notes: rejected answers a filter would reject, by reason (kept)


def registry_entry(layout: str | None = None) -> dict:
    """dataset_info.json entry (without file_name): LLaMA-Factory's sharegpt ranking columns and tags."""
    return {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": HUMAN, "assistant_tag": GPT},
    }


def _prompt_and_answers(row: dict) -> tuple[str | None, list[dict], str, str] | Skip:
    if "question" in row or "response_chosen" in row:
        fields = [string_field(row, key) for key in ("question", "response_chosen", "response_rejected")]
        if skip := next((field for field in fields if isinstance(field, Skip)), None):
            return skip
        question, chosen, rejected = fields
        return None, [{"from": HUMAN, "value": question}], chosen, rejected
    if "conversations" not in row:
        return Skip(MISSING_FIELD, "conversations, chosen, rejected (MedicalGPT) or question, response_chosen, response_rejected")
    if not isinstance(row["conversations"], list):
        return Skip(NON_STRING_FIELD, f"conversations is {type(row['conversations']).__name__}")
    answers = [string_field(row, key) for key in ("chosen", "rejected")]
    if skip := next((field for field in answers if isinstance(field, Skip)), None):
        return skip
    own_system, turns = sharegpt_turns(list(row["conversations"]) + [{"from": GPT, "value": answers[0]}])
    if isinstance(turns, Skip):
        return turns
    return own_system, turns[:-1], *answers


def convert(row: object, layout: str | None = None, medical: bool = True) -> dict | Skip:
    """One preference row -> the ranking record; think blocks are stripped from both answers, and a pair whose answers
    are then the same is skipped."""
    if not isinstance(row, dict):
        return Skip(NOT_AN_OBJECT, type(row).__name__)
    parsed = _prompt_and_answers(row)
    if isinstance(parsed, Skip):
        return parsed
    own_system, prompt, chosen, rejected = parsed
    from converters.quality import strip_think  # here, not at import: `caretune --help` reads this module

    rejected = strip_think(rejected)
    if not rejected:
        return Skip(EMPTY_AFTER_STRIP, "rejected is only a <think> block")
    if strip_think(chosen) == rejected:
        return Skip(SAME_ANSWERS, "the two answers are the same")
    system = own_system or (MEDICAL_SYSTEM_PROMPT if medical else "")
    return {
        "conversations": prompt,
        "chosen": {"from": GPT, "value": chosen},
        "rejected": {"from": GPT, "value": rejected},
        "system": system,
    }


def _general_convert(row: object, layout: str | None = None) -> dict | Skip:
    return convert(row, layout, medical=False)


def pairs(record: dict) -> list[tuple[str, str]]:
    """The `(question, answer)` turns the filters and the care rules read: the prompt's, the last answered by chosen."""
    return turn_pairs({"conversations": [*record["conversations"], record["chosen"]]})


def first_query(record: dict) -> str:
    """The dedupe and split key: the whole prompt (each turn's text, in order)."""
    return "\n".join(turn["value"] for turn in record["conversations"])


def with_pairs(record: dict, turns: list[tuple[str, str]]) -> dict:
    """`record` with its prompt and chosen answer replaced by `turns`."""
    conversations = [
        {"from": role, "value": value} for question, answer in turns for role, value in ((HUMAN, question), (GPT, answer))
    ]
    return {**record, "conversations": conversations[:-1], "chosen": conversations[-1]}


def clean_rejected(record: dict, filters: frozenset[str]) -> tuple[dict, list[str]]:
    """The rejected answer as the filters see it: the reasons it would be rejected for, as notes."""
    from converters.quality import first_rejection

    question = record["conversations"][-1]["value"]
    rejection = first_rejection([(question, record["rejected"]["value"])], filters) if filters else None
    return record, [REJECTED_PREFIX + rejection[0]] if rejection else []


def fitting_dialogues(record: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The dialogues a fitted row must hold within the cutoff: the prompt with each answer (LLaMA-Factory's pairwise
    processor encodes both)."""
    rejected = {**record, "chosen": record["rejected"]}
    return [(record["system"], pairs(record)), (record["system"], pairs(rejected))]


def fitted(record: dict, cutoff_len: int, count) -> dict | None:
    """The record with its oldest whole prompt turns dropped so the prompt fits `cutoff_len` tokens with either answer
    (`count`: a converters.turns.TokenCounter); None when the question with the longer answer does not fit."""
    plans = [plan_rows(system, turns, TRAIN_LAST, cutoff_len, count) for system, turns in fitting_dialogues(record)]
    if not all(plan.windows for plan in plans):
        return None
    return window(record, max(plan.windows[-1].first for plan in plans), 0)


def dialogue(record: dict) -> tuple[str, list[tuple[str, str]]]:
    """The system prompt and the turns with the chosen answer."""
    return record["system"], pairs(record)


def window(record: dict, first: int, last: int) -> dict:
    """The record holding turns `first`..`last` of its prompt (the last is always the pair's question)."""
    if first == 0:
        return record
    return {**record, "conversations": record["conversations"][2 * first :]}


def general_source() -> types.ModuleType:
    """The same converter for general (non-medical) preference sets: their own system prompt or none."""
    module = types.ModuleType(f"{__name__}_general")
    module.__dict__.update({key: value for key, value in globals().items() if not key.startswith("__")})
    module.NAME, module.DATASET, module.EVAL_DATASET = "prefs-general", GENERAL_PREFS_DATASET, GENERAL_PREFS_EVAL_DATASET
    module.MEDICAL, module.convert = False, _general_convert
    return module
