"""General (non-medical) Chinese instruction rows -> LLaMA-Factory sharegpt records, mixed into training so the
medical gain costs less general ability.

Accepted shapes, told apart row by row:
- ShareGPT: `{"conversations": [{"from": "human"|"gpt", "value"}, ...]}` (shibing624/sharegpt_gpt4's
  sharegpt_zh_38K_format.jsonl, CC BY 4.0, is the default set);
- alpaca: `{"instruction", "input", "output"}` with optional `history` ([[question, answer], ...]) and `system`.

The rows keep their own system prompt, or none: never the medical one. They teach what the base model could already
do, in the prompt Qwen3 was taught it (no system turn); putting the medical persona on a poem or a tax question would
teach the persona, not the skill. Medical-only steps (care and emergency reminders) do not apply; the quality
filters, PII masking, dedupe and the held-out split do.
"""

from __future__ import annotations

from converters.huatuo import (  # noqa: F401  (the pipeline calls these here)
    GPT,
    HUMAN,
    answered_record,
    dialogue,
    encode,
    first_query,
    pairs,
    scrub,
    sharegpt_turns,
    window,
    with_pairs,
)
from converters.names import GENERAL_DATASET, GENERAL_EVAL_DATASET
from converters.records import EMPTY_AFTER_STRIP, MISSING_FIELD, NON_STRING_FIELD, NOT_AN_OBJECT, Skip
from converters.turns import TRAIN_LAST

NAME = "general"
DATASET = GENERAL_DATASET
EVAL_DATASET = GENERAL_EVAL_DATASET
MEDICAL = False  # no care reminders, no medical system prompt
# The last answer of each conversation trains; earlier answers are its context. Training every answer costs 3.8x the
# tokens on the shared 1K ShareGPT file (1,793,663 against 476,392 an epoch, benchmarks/training_truth.py) for rows that
# only rehearse what Qwen3 already does; `--train-answers all` trains every answer.
TRAIN_ANSWERS = TRAIN_LAST


def registry_entry(layout: str | None = None) -> dict:
    """dataset_info.json entry (without file_name): LLaMA-Factory's sharegpt columns and tags."""
    return {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": HUMAN, "assistant_tag": GPT},
    }


def _text(row: dict, key: str) -> str | Skip:
    value = row.get(key, "")
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else Skip(NON_STRING_FIELD, key)


def _alpaca_turns(row: dict) -> list[dict] | Skip:
    parts = [_text(row, key) for key in ("instruction", "input", "output")]
    for part in parts:
        if isinstance(part, Skip):
            return part
    instruction, query, answer = parts
    question = "\n".join(part for part in (instruction, query) if part)
    if not question or not answer:
        return Skip(EMPTY_AFTER_STRIP, "instruction and input" if not question else "output")
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(turn, list) and len(turn) == 2 and all(isinstance(text, str) for text in turn) for turn in history
    ):
        return Skip(NON_STRING_FIELD, "history must be [[question, answer], ...]")
    turns = [(q.strip(), a.strip()) for q, a in history] + [(question, answer)]
    if not all(q and a for q, a in turns):
        return Skip(EMPTY_AFTER_STRIP, "a history turn")
    return [{"from": role, "value": value} for q, a in turns for role, value in ((HUMAN, q), (GPT, a))]


def convert(row: object, layout: str | None = None) -> dict | Skip:
    """One general row -> `{"conversations": [...], "system": its own system prompt or ""}` (a `system` field, or a
    leading ShareGPT `system` turn); a trailing unanswered human turn is dropped (counted in the report)."""
    if not isinstance(row, dict):
        return Skip(NOT_AN_OBJECT, type(row).__name__)
    own_system = None
    if "conversations" in row:
        own_system, turns = sharegpt_turns(row["conversations"])
    elif "instruction" in row or "output" in row:
        turns = _alpaca_turns(row)
    else:
        return Skip(MISSING_FIELD, "conversations (ShareGPT) or instruction/output (alpaca)")
    if isinstance(turns, Skip):
        return turns
    system = _text(row, "system")
    if isinstance(system, Skip):
        return system
    return answered_record(turns, system or own_system or "")
