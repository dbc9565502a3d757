"""Turn expansion and fitting (converters/turns.py), and what the pipeline writes from them: one training row per
trained answer after the split, whole old turns dropped to fit, a question and answer too long skipped."""

import json

from converters import huatuo
from converters.options import Options
from converters.turns import TRAIN_ALL, TRAIN_LAST, TurnTokens, Window, plan_rows
from tests.helpers import accounted, convert_into


def counter(system_tokens: int, per_turn: list[int], think: int = 4):
    """A token counter that gives fixed counts (the real one is tested against LLaMA-Factory in tests/prep)."""
    return lambda system, turns: TurnTokens(system_tokens, per_turn[: len(turns)], think)


LONG = [("问" * 600, "答" * 600)] * 4  # 4 turns of ~3,600 bytes each: over any small cutoff by bytes


def test_short_conversations_need_no_counting_and_train_every_answer():
    turns = [("头疼怎么办？", "多休息，持续不缓解请就医。")] * 3
    plan = plan_rows("系统", turns, TRAIN_ALL, 2047, None)  # no counter needed: the bytes bound it
    assert plan.windows == (Window(0, 0), Window(0, 1), Window(0, 2)) and plan.turns_dropped == 0
    last = plan_rows("系统", turns, TRAIN_LAST, 2047, None)
    assert last.windows == (Window(0, 2),) and last.context_only == 2


def test_a_long_row_drops_its_oldest_whole_turns_and_keeps_the_system_prompt():
    plan = plan_rows("系统", LONG, TRAIN_ALL, 1000, counter(50, [300, 300, 300, 300]))
    # budget for the last answer: 1000 - 50 (system) - 4 (think) - 300 = 646: two earlier turns fit, not three
    assert plan.windows == (Window(0, 0), Window(0, 1), Window(0, 2), Window(1, 3))
    assert plan.turns_dropped == 1 and plan.fitted_rows == 1
    for window in plan.windows:
        assert 50 + 4 + 300 * (window.last - window.first + 1) <= 1000


def test_an_answer_too_long_alone_does_not_train():
    plan = plan_rows("", LONG, TRAIN_ALL, 1000, counter(0, [300, 2000, 300, 300]))
    assert [w.last for w in plan.windows] == [0, 2, 3] and plan.too_long == 1
    assert plan.windows[1] == Window(2, 2)  # the turn before it is too long to be its history


def _write(path, conversations):
    path.write_text("".join(json.dumps({"conversations": c}, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
    return path


def _dialogue(opening: str, answers: int, answer: str = "建议多休息，注意观察，如果症状持续请到医院就诊。") -> list[dict]:
    turns = []
    for number in range(answers):
        turns += [{"from": "human", "value": f"{opening}（第{number + 1}问）"}, {"from": "gpt", "value": answer}]
    return turns


def test_every_answer_becomes_a_row_after_the_split_and_no_conversation_is_in_both(tmp_path):
    raw = _write(tmp_path / "dialogues.jsonl", [_dialogue(f"我第{n}次头疼，怎么办", 1 + n % 4) for n in range(40)])
    report, outputs = convert_into(tmp_path, huatuo, raw, eval_size=4, options=Options(care_reminder="off"))
    assert accounted(report)  # by conversation: read = written + eval + duplicates + skipped
    train = json.loads(outputs.train.read_text(encoding="utf-8"))
    held_out = json.loads(outputs.eval.read_text(encoding="utf-8"))
    training = report["training"]
    assert training["rows"] == len(train) == training["trained_answers"] == training["answers"] > report["written"]
    assert len({row["conversation"] for row in train}) == report["written"]
    assert len(held_out) == report["eval"] == len({row["conversation"] for row in held_out})  # one row each
    assert not {row["conversation"] for row in train} & {row["conversation"] for row in held_out}
    for row in train:  # each row ends on the answer it trains, its history whole from the first turn
        assert row["conversations"][-1]["from"] == "gpt" and row["conversations"][0]["value"].endswith("（第1问）")


def test_the_last_answer_policy_trains_one_row_per_conversation(tmp_path):
    raw = _write(tmp_path / "dialogues.jsonl", [_dialogue(f"我第{n}次失眠，怎么调理", 3) for n in range(10)])
    report, outputs = convert_into(
        tmp_path, huatuo, raw, eval_size=0, options=Options(care_reminder="off", train_answers=TRAIN_LAST)
    )
    assert report["training"]["rows"] == 10 and report["training"]["context_only_answers"] == 20
    assert report["training"]["trained_share"] == round(10 / 30, 4)


def test_fitting_writes_whole_turns_and_skips_a_question_and_answer_too_long(tmp_path):
    long_answer = "，".join(f"第{i}条建议是注意饮食" for i in range(40)) + "。请到医院就诊。"
    conversations = [_dialogue("我胃疼了很久，饭后更厉害", 4, long_answer), _dialogue("我发烧了", 1, long_answer * 10)]
    raw = _write(tmp_path / "long.jsonl", conversations)
    fake = counter(10, [450, 450, 450, 450, 4600])
    options = Options(
        care_reminder="off",
        cutoff_len=1000,
        count=lambda system, turns: fake(system, turns)._replace(turns=[4600] if len(turns) == 1 else [450] * len(turns)),
    )
    report, outputs = convert_into(tmp_path, huatuo, raw, eval_size=0, options=options)
    assert report["skipped"] == {"too_long": 1} and accounted(report)
    rows = json.loads(outputs.train.read_text(encoding="utf-8"))
    # 1000 - 10 - 4 = 986 tokens: two 450-token turns a row at most
    assert [len(row["conversations"]) // 2 for row in rows] == [1, 2, 2, 2]
    assert report["training"]["fitted_rows"] == 2 and report["training"]["turns_dropped"] == 3
    assert all(row["system"] for row in rows)  # the system prompt stays in every fitted row


def test_text_that_nfc_lengthens_is_counted_not_bounded_by_its_bytes():
    """Qwen3's tokenizer normalises to NFC first: U+1D160 is 4 bytes and 6 tokens, so bytes bound nothing there."""
    from converters.turns import fits_by_bytes

    note = "\U0001d160"
    assert fits_by_bytes("头疼".encode(), 1, 2047) and not fits_by_bytes(note.encode(), 1, 2047)
    counted = []

    def count(system, turns):
        counted.append(turns)
        return TurnTokens(0, [6 * len(turns[0][1])], 4)

    plan_rows("", [("问", note * 10)], TRAIN_ALL, 2047, count)
    assert counted  # counted, though 41 bytes are far under the cutoff


def test_a_fitted_rows_later_opening_is_not_a_duplicate_of_another_dataset(tmp_path):
    """Deduping against datasets converted earlier read each row's first question: a fitted row opens at a later
    question, which then refused a ChatMed row asking the same. The conversation's key is what counts."""
    from converters import chatmed

    long_answer = "，".join(f"第{i}条建议是注意饮食" for i in range(40)) + "。请到医院就诊。"
    raw = _write(tmp_path / "long.jsonl", [_dialogue("我胃疼了很久，饭后更厉害", 4, long_answer)])
    options = Options(care_reminder="off", cutoff_len=1000, count=counter(10, [450] * 4))
    report, outputs = convert_into(tmp_path, huatuo, raw, eval_size=0, options=options)
    assert report["training"]["fitted_rows"] > 0
    chatmed_raw = tmp_path / "chatmed.jsonl"
    chatmed_raw.write_text(
        json.dumps(
            {"query": "我胃疼了很久，饭后更厉害（第4问）", "response": "建议到消化内科就诊，做胃镜检查。"}, ensure_ascii=False
        )
        + "\n",
        encoding="utf-8",
    )
    second, _ = convert_into(tmp_path, chatmed, chatmed_raw, eval_size=0)
    assert second["written"] == 1 and second["duplicates"] == 0
