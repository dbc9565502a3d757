"""ChatMed_Consult rows `{"query", "response"}` -> alpaca records.

Layouts: `system` (default) puts the medical prompt in an alpaca `system` column and the question in
`instruction`, so LLaMA-Factory renders training rows exactly as chat, the API and `predict` render a
request; `walkthrough` keeps the reference walkthrough's layout (prompt as `instruction`, question as `input`).
"""

from __future__ import annotations

from collections import Counter

import orjson

from caretune.basics.pii import mask_pii
from converters.choices import SYSTEM_LAYOUT
from converters.jsoncodec import dumps_bytes
from converters.names import CHATMED_DATASET, CHATMED_EVAL_DATASET, MEDICAL_SYSTEM_PROMPT
from converters.records import NOT_AN_OBJECT, Skip, string_field
from converters.turns import TRAIN_ALL

NAME = "chatmed"
DATASET = CHATMED_DATASET
EVAL_DATASET = CHATMED_EVAL_DATASET
TRAIN_ANSWERS = TRAIN_ALL  # one question, one answer: the row trains it


_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}


def registry_entry(layout: str) -> dict:
    """dataset_info.json entry (without file_name): LLaMA-Factory's alpaca columns for `layout`."""
    columns = {**_COLUMNS, "system": "system"} if layout == SYSTEM_LAYOUT else dict(_COLUMNS)
    return {"formatting": "alpaca", "columns": columns}


def _record(query: str, response: str, layout: str) -> dict:
    if layout == SYSTEM_LAYOUT:
        return {"system": MEDICAL_SYSTEM_PROMPT, "instruction": query, "input": "", "output": response, "history": []}
    return {"instruction": MEDICAL_SYSTEM_PROMPT, "input": query, "output": response, "history": []}


_SYSTEM_KEYS = ("system", "instruction", "input", "output", "history")
_WALKTHROUGH_KEYS = ("instruction", "input", "output", "history")
_PROMPT = orjson.dumps(MEDICAL_SYSTEM_PROMPT)


def encode(record: dict) -> bytes:
    """`dumps_bytes(record)`, byte for byte, with the constant prompt encoded once rather than per row."""
    keys = tuple(record)
    try:
        if keys == _SYSTEM_KEYS and record["system"] == MEDICAL_SYSTEM_PROMPT and record["input"] == "":
            head = (b'{"system":', _PROMPT, b',"instruction":', orjson.dumps(record["instruction"]), b',"input":""')
        elif keys == _WALKTHROUGH_KEYS and record["instruction"] == MEDICAL_SYSTEM_PROMPT:
            head = (b'{"instruction":', _PROMPT, b',"input":', orjson.dumps(record["input"]))
        else:
            return dumps_bytes(record)
        if record["history"] != []:
            return dumps_bytes(record)
        return b"".join((*head, b',"output":', orjson.dumps(record["output"]), b',"history":[]}'))
    except TypeError:  # text orjson cannot encode: dumps_bytes explains it
        return dumps_bytes(record)


def convert(row: object, layout: str = SYSTEM_LAYOUT) -> dict | Skip:
    """One ChatMed row -> an alpaca record in `layout`, or why not."""
    if not isinstance(row, dict):
        return Skip(NOT_AN_OBJECT, type(row).__name__)
    query, response = row.get("query"), row.get("response")
    if type(query) is str and type(response) is str:  # the common case, checked cheaply
        query, response = query.strip(), response.strip()
        if query and response:
            return _record(query, response, layout)
    query = string_field(row, "query")
    if isinstance(query, Skip):
        return query
    response = string_field(row, "response")
    if isinstance(response, Skip):
        return response
    return _record(query, response, layout)


def _question_key(record: dict) -> str:
    return "input" if record["input"] else "instruction"  # walkthrough: input; system layout: instruction


def first_query(record: dict) -> str:
    """The patient's question (in either layout): the dedupe and split key."""
    return record["input"] or record["instruction"]


def pairs(record: dict) -> list[tuple[str, str]]:
    """The `(question, answer)` turns."""
    return [(first_query(record), record["output"])]


def dialogue(record: dict) -> tuple[str, list[tuple[str, str]]]:
    """The system prompt and `(question, answer)` turns as LLaMA-Factory renders the record (alpaca: the user turn is
    `instruction`, then `input` on a new line)."""
    question = "\n".join(part for part in (record["instruction"], record["input"]) if part)
    return record.get("system", ""), [(question, record["output"])]


def window(record: dict, first: int, last: int) -> dict:
    """The record holding turns `first`..`last`: the record itself, which has one."""
    return record


def with_pairs(record: dict, turns: list[tuple[str, str]]) -> dict:
    """`record` with its question and answer replaced."""
    ((question, answer),) = turns
    return {**record, _question_key(record): question, "output": answer}


def scrub(record: dict) -> tuple[dict, Counter | None]:
    """Mask personal data in the patient's text; the counts are None when nothing was masked."""
    key = _question_key(record)
    masked, counts = mask_pii(record[key])
    if counts:
        record = {**record, key: masked}
    return record, counts
