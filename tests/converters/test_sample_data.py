"""The shipped sample: enough realistic consultations in both raw formats, with deliberate faults."""

import json

from converters import chatmed, huatuo
from converters.records import Skip
from tests.helpers import CHATMED_SAMPLE, HUATUO_SAMPLE


def test_chatmed_sample_shape():
    lines = CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines()
    valid, faulty = 0, 0
    for line in lines:
        try:
            result = chatmed.convert(json.loads(line))
        except json.JSONDecodeError:
            faulty += 1
            continue
        if isinstance(result, Skip):
            faulty += 1
        else:
            valid += 1
    assert valid >= 60 and faulty >= 4


def test_huatuo_sample_shape():
    rows = json.loads(HUATUO_SAMPLE.read_text(encoding="utf-8"))
    results = [huatuo.convert(row) for row in rows]
    records = [r for r in results if not isinstance(r, Skip)]
    assert len(records) >= 60 and len(results) - len(records) >= 4
    assert sum(len(r["conversations"]) > 2 for r in records) >= 5  # some multi-turn
    assert any("data" in row for row in rows)  # the older {"data": ["问：…", "答：…"]} shape too
