"""On-policy pairs: the verdict of a pair from its two orders, the pair a prompt gives, the judge's cost, and which
prompts are held out or trained on."""

import json

import pytest

from caretune.evaluation.preferences import judge_calls, pick_pair, split_keys, verdict_of
from converters.records import query_key
from tests.helpers import CHATMED_SAMPLE, SAMPLE, convert_into


@pytest.mark.parametrize(
    "first, second, verdict",
    [
        ("A", "B", "i"),  # i shown first wins, and i shown second wins
        ("B", "A", "j"),
        ("tie", "tie", "tie"),
        ("A", "tie", "tie"),
        ("A", "A", "inconsistent"),  # each order names the answer shown first: position, not quality
        ("B", "B", "inconsistent"),
        (None, "A", "unparsed"),
    ],
)
def test_a_pair_counts_only_when_one_answer_wins_both_orders(first, second, verdict):
    assert verdict_of(first, second) == verdict


def test_the_prompt_gives_its_best_answer_against_the_one_it_beat_that_lost_most():
    answers = ["a", "bb", "ccc", "dddd"]
    wins = {(0, 1): "j", (0, 2): "j", (0, 3): "tie", (1, 2): "i", (1, 3): "inconsistent", (2, 3): "unparsed"}
    assert pick_pair(answers, wins) == (1, 0)  # 1 beat 0 and 2; 0 lost twice, 2 once
    assert pick_pair(answers, {(0, 1): "tie", (2, 3): "inconsistent"}) is None


def test_the_judge_is_asked_every_pair_in_both_orders():
    assert judge_calls(6, 3) == 36 and judge_calls(200, 4) == 2400 and judge_calls(1, 2) == 2


def test_held_out_prompts_are_known_and_sft_training_prompts_are_told_apart(tmp_path):
    from converters import chatmed, prefs

    (tmp_path / "data").mkdir()
    convert_into(tmp_path, chatmed, CHATMED_SAMPLE, eval_size=5)
    convert_into(tmp_path, prefs, SAMPLE / "prefs_med_sample.jsonl", eval_size=2)
    held_out, trained = split_keys(tmp_path)
    sft_eval = json.loads((tmp_path / "data/multi-med-eval.json").read_text())
    sft_train = json.loads((tmp_path / "data/multi-med.json").read_text())
    pairs_eval = json.loads((tmp_path / "data/prefs-med-eval.json").read_text())
    pairs_train = json.loads((tmp_path / "data/prefs-med.json").read_text())
    assert {query_key(chatmed.first_query(row)) for row in sft_eval} <= held_out
    assert {query_key(prefs.first_query(row)) for row in pairs_eval} <= held_out
    assert {query_key(chatmed.first_query(row)) for row in sft_train} <= trained
    assert not {query_key(prefs.first_query(row)) for row in pairs_train} & (trained | held_out)
