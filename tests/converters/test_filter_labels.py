"""The filters that judge meaning, against 913 turns of the shared real files labelled by reading them
(tests/data/filter_labels.jsonl, drawn by benchmarks/filter_labels.py): today's filters over the same labels."""

import importlib.util

from tests.helpers import ROOT


def _table():
    spec = importlib.util.spec_from_file_location("filter_labels", ROOT / "benchmarks" / "filter_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {(row["file"], row["filter"]): row for row in module.table(module.LABELS)}


def test_precision_of_the_meaning_filters_on_labelled_real_rows():
    table = _table()
    for file_name in ("chatmed", "general"):
        for name in ("truncated_answer", "ai_self_reference"):
            row = table[(file_name, name)]
            assert row["rejected"] >= 20 and row["precision"] >= 0.95, row  # the goal: at least 95%
    assert table[("general", "jailbreak")]["precision"] >= 0.95
    assert table[("chatmed", "jailbreak")]["rejected"] == 0  # no consultation is read as a jailbreak


def test_recall_where_the_labels_can_tell():
    table = _table()
    assert table[("chatmed", "ai_self_reference")]["recall"] >= 0.95
    assert table[("general", "ai_self_reference")]["recall"] >= 0.9
    assert table[("general", "jailbreak")]["recall"] >= 0.9
