"""ChatMed_Consult rows `{"query", "response"}` -> alpaca records."""

from __future__ import annotations

from collections import Counter

from caretune.constants import CHATMED_DATASET, CHATMED_EVAL_DATASET, MEDICAL_SYSTEM_PROMPT
from converters.pii import mask_pii
from converters.records import NOT_AN_OBJECT, Skip, string_field

NAME = "chatmed"
DATASET = CHATMED_DATASET
EVAL_DATASET = CHATMED_EVAL_DATASET

# dataset_info.json entry (without file_name): LLaMA-Factory's alpaca columns.
REGISTRY_ENTRY = {
    "formatting": "alpaca",
    "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"},
}


def convert(row: object) -> dict | Skip:
    """One ChatMed row -> `{"instruction", "input", "output", "history": []}`, or why not."""
    if not isinstance(row, dict):
        return Skip(NOT_AN_OBJECT, type(row).__name__)
    query, response = row.get("query"), row.get("response")
    if type(query) is str and type(response) is str:  # the common case, checked cheaply
        query, response = query.strip(), response.strip()
        if query and response:
            return {"instruction": MEDICAL_SYSTEM_PROMPT, "input": query, "output": response, "history": []}
    query = string_field(row, "query")
    if isinstance(query, Skip):
        return query
    response = string_field(row, "response")
    if isinstance(response, Skip):
        return response
    return {"instruction": MEDICAL_SYSTEM_PROMPT, "input": query, "output": response, "history": []}


def first_query(record: dict) -> str:
    """The patient's question: the dedupe and split key."""
    return record["input"]


def scrub(record: dict) -> tuple[dict, Counter | None]:
    """Mask personal data in the patient's text; the counts are None when nothing was masked."""
    masked, counts = mask_pii(record["input"])
    if counts:
        record = {**record, "input": masked}
    return record, counts
