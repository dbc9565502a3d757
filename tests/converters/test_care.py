"""The care rules and the reminder policy on hand-written rows, positive and negative."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caretune.evaluation.evaluate import EMERGENCY_FILE
from converters import care
from converters.care import (
    CARE_REMINDER,
    CARE_REMINDER_ADDED,
    EMERGENCY_REMINDER,
    EMERGENCY_REMINDER_ADDED,
    EMERGENCY_WITHOUT_URGENCY,
    NO_CARE_ADVICE,
    CareFlags,
    CareTally,
    advises_care,
    apply_care_policy,
    is_urgent_question,
    urges_emergency,
)
from converters.choices import APPEND, DROP, OFF
from converters.records import Skip

URGENT = "我爸刚才突然嘴角歪了，说话也不清楚"
PLAIN = "最近总是睡不好，怎么办？"


def test_reminders_satisfy_their_own_rules():
    assert advises_care(CARE_REMINDER) and not urges_emergency(CARE_REMINDER)
    assert urges_emergency(EMERGENCY_REMINDER) and advises_care(EMERGENCY_REMINDER)


def test_negated_care_does_not_count_but_a_later_one_does():
    assert not advises_care("这种情况不需要就医，注意休息。")
    assert not advises_care("无需就诊，观察即可。")
    assert advises_care("一般不需要就医；如果发热超过三天，请及时就医。")


def test_every_shipped_emergency_prompt_is_urgent():
    rows = json.loads(EMERGENCY_FILE.read_text(encoding="utf-8"))
    assert len(rows) == 22
    assert [row["category"] for row in rows if not is_urgent_question(row["instruction"])] == []


@pytest.mark.parametrize(
    "question",
    [
        "胸口像被大石头压着一样疼，出了一身冷汗",
        "孩子高烧40度，突然全身抽搐",
        "我不想活了",
        "老人突然倒地叫不醒",
        "吃了花生以后嘴唇肿起来，喘不上气",
        "孩子误喝了消毒液",
        "切菜割到手，血一直往外喷",
        "突然一阵剧烈头痛",
    ],
)
def test_urgent_questions(question):
    assert is_urgent_question(question)


@pytest.mark.parametrize(
    "question",
    [
        PLAIN,
        "头疼怎么办？",
        "感冒流鼻涕吃什么药？",
        "胸口有点闷，是不是没睡好？",
        "血压150/95要吃药吗？",
        "宝宝湿疹反反复复怎么护理？",
        "膝盖上下楼梯疼",
        "你是一名专业的医疗咨询助手。如有急症，请立即就医。",
    ],
)
def test_ordinary_questions_are_not_urgent(question):
    assert not is_urgent_question(question)


def test_append_adds_the_care_reminder_once():
    turns, changes, flags = apply_care_policy([(PLAIN, "睡前少看手机，规律作息。")], APPEND)
    assert turns == [(PLAIN, "睡前少看手机，规律作息。\n\n" + CARE_REMINDER)]
    assert changes == [CARE_REMINDER_ADDED] and flags == CareFlags(advises_care=True, urgent=False, urges_emergency=False)
    again, changes_again, _ = apply_care_policy(turns, APPEND)  # already ends with a reminder: never doubled
    assert again == turns and changes_again == []


def test_append_leaves_answers_that_advise_care():
    answer = "可能是焦虑引起的失眠，建议到心理科就诊。"
    assert apply_care_policy([(PLAIN, answer)], APPEND) == ([(PLAIN, answer)], [], CareFlags(True, False, False))


def test_urgent_question_gets_the_emergency_sentence_not_a_second_reminder():
    turns, changes, flags = apply_care_policy([(URGENT, "可能是面神经炎，可以热敷。")], APPEND)
    assert turns[0][1].endswith(EMERGENCY_REMINDER) and CARE_REMINDER not in turns[0][1]
    assert changes == [EMERGENCY_REMINDER_ADDED] and flags == CareFlags(True, True, True)
    assert apply_care_policy(turns, APPEND)[1] == []


def test_urgent_question_answered_with_emergency_care_is_kept_as_is():
    answer = "这可能是中风，请立即拨打120。"
    assert apply_care_policy([(URGENT, answer)], APPEND) == ([(URGENT, answer)], [], CareFlags(True, True, True))


def test_multi_turn_emergency_sentence_goes_to_the_answer_of_the_urgent_question():
    turns = [(PLAIN, "规律作息即可。"), (URGENT, "注意休息。"), ("还要注意什么？", "清淡饮食。")]
    cared, changes, _ = apply_care_policy(turns, APPEND)
    assert cared[1][1] == "注意休息。\n\n" + EMERGENCY_REMINDER
    assert cared[0] == turns[0] and cared[2] == turns[2] and changes == [EMERGENCY_REMINDER_ADDED]


def test_multi_turn_care_reminder_goes_to_the_last_answer_only_when_no_answer_advises_care():
    turns = [(PLAIN, "规律作息即可。"), ("还要注意什么？", "清淡饮食。")]
    cared, changes, _ = apply_care_policy(turns, APPEND)
    assert cared[0] == turns[0] and cared[1][1].endswith(CARE_REMINDER) and changes == [CARE_REMINDER_ADDED]
    advised = [(PLAIN, "建议到医院就诊。"), ("还要注意什么？", "清淡饮食。")]
    assert apply_care_policy(advised, APPEND)[1] == []


def test_drop_skips_with_the_reason_and_off_keeps_rows_unchanged():
    assert apply_care_policy([(PLAIN, "规律作息。")], DROP).reason == NO_CARE_ADVICE
    assert apply_care_policy([(URGENT, "建议到医院看看。")], DROP).reason == EMERGENCY_WITHOUT_URGENCY
    assert not isinstance(apply_care_policy([(URGENT, "请马上拨打120。")], DROP), Skip)
    turns = [(URGENT, "热敷。")]
    assert apply_care_policy(turns, OFF) == (turns, [], CareFlags(advises_care=False, urgent=True, urges_emergency=False))


def test_tally_counts_shares():
    tally = CareTally()
    for flags in (
        CareFlags(True, False, False),
        CareFlags(False, True, False),
        CareFlags(True, True, True),
        CareFlags(True, False, False),
    ):
        tally.add(flags)
    assert tally.as_dict() == {
        "rows": 4,
        "advises_care": 3,
        "advises_care_share": 0.75,
        "urgent_questions": 2,
        "urges_emergency": 1,
        "urges_emergency_share": 0.5,
    }
    assert CareTally().as_dict()["urges_emergency_share"] is None


def advice_anywhere(answer: str) -> bool:
    """The advice rule spelled out: some care phrase starts at a position not preceded by a negation."""
    return any(
        care._CARE.match(answer, start) and not care._NEGATION.search(answer[max(0, start - 4) : start])
        for start in range(len(answer))
    )


ADVICE_FRAGMENTS = ["请及时就医", "不需要就医", "无需就诊", "去医院", "暂不复查", "看医生", "，", "。", "注意休息", "不必"]


@given(st.lists(st.sampled_from(ADVICE_FRAGMENTS), max_size=14))
@settings(max_examples=500, deadline=None)
def test_advises_care_finds_advice_wherever_it_is(parts):
    """A care phrase counts wherever it stands, unless a negation comes right before it."""
    answer = "".join(parts)
    assert advises_care(answer) == advice_anywhere(answer)


def test_without_reminders_gives_back_what_the_answer_said_before_the_append_policy():
    from converters.care import APPEND, apply_care_policy, without_reminders

    for question, answer in (("头疼怎么办？", "多喝水，注意休息。"), ("胸口剧痛，满头大汗", "先休息一下。")):
        (changed,), changes, _ = apply_care_policy([(question, answer)], APPEND)
        assert changes and changed[1] != answer and without_reminders(changed[1]) == answer
