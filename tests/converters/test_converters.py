"""The per-source pure converters: every skip reason, and the records LLaMA-Factory expects."""

from caretune.constants import MEDICAL_SYSTEM_PROMPT
from converters import chatmed, huatuo
from converters.records import (
    BAD_ROLE_ORDER,
    EMPTY_AFTER_STRIP,
    MISSING_FIELD,
    NON_STRING_FIELD,
    NOT_AN_OBJECT,
    UNKNOWN_SHAPE,
    Skip,
)


def test_medical_prompt_tells_users_to_confirm_with_a_doctor():
    assert "医生" in MEDICAL_SYSTEM_PROMPT and "确诊" in MEDICAL_SYSTEM_PROMPT


def test_chatmed_converts_to_alpaca_with_the_prompt_as_system():
    record = chatmed.convert({"query": " 头疼怎么办？ ", "response": "多休息。\n", "extra": 1})
    assert record == {
        "system": MEDICAL_SYSTEM_PROMPT,
        "instruction": "头疼怎么办？",
        "input": "",
        "output": "多休息。",
        "history": [],
    }
    assert chatmed.first_query(record) == "头疼怎么办？"
    assert chatmed.pairs(record) == [("头疼怎么办？", "多休息。")]
    assert chatmed.with_pairs(record, [("头痛？", "睡一觉。")]) == {**record, "instruction": "头痛？", "output": "睡一觉。"}
    assert chatmed.registry_entry("system")["columns"]["system"] == "system"


def test_chatmed_walkthrough_layout_keeps_the_walkthrough_record():
    record = chatmed.convert({"query": " 头疼怎么办？ ", "response": "多休息。\n"}, "walkthrough")
    assert record == {"instruction": MEDICAL_SYSTEM_PROMPT, "input": "头疼怎么办？", "output": "多休息。", "history": []}
    assert chatmed.first_query(record) == "头疼怎么办？"
    assert chatmed.with_pairs(record, [("头痛？", "睡一觉。")])["input"] == "头痛？"
    assert "system" not in chatmed.registry_entry("walkthrough")["columns"]


def test_chatmed_skip_reasons():
    assert chatmed.convert([1]) == Skip(NOT_AN_OBJECT, "list")
    assert chatmed.convert({"query": "q"}).reason == MISSING_FIELD
    assert chatmed.convert({"response": "r"}).reason == MISSING_FIELD
    assert chatmed.convert({"query": "q", "response": 5}).reason == NON_STRING_FIELD
    assert chatmed.convert({"query": ["q"], "response": "r"}).reason == NON_STRING_FIELD
    assert chatmed.convert({"query": "  ", "response": "r"}).reason == EMPTY_AFTER_STRIP
    assert chatmed.convert({"query": "q", "response": ""}).reason == EMPTY_AFTER_STRIP


def test_chatmed_scrub_masks_only_patient_text():
    record = chatmed.convert({"query": "我电话13812345678", "response": "可拨打12345678901"})
    scrubbed, counts = chatmed.scrub(record)
    assert scrubbed["instruction"] == "我电话[电话]" and counts["phone"] == 1
    walkthrough, _ = chatmed.scrub(chatmed.convert({"query": "我电话13812345678", "response": "好"}, "walkthrough"))
    assert walkthrough["input"] == "我电话[电话]" and walkthrough["instruction"] == MEDICAL_SYSTEM_PROMPT
    assert scrubbed["output"] == "可拨打12345678901"


def turns(*pairs):
    return [{"from": role, "value": value} for role, value in pairs]


def test_huatuo_multi_turn_kept_with_system_prompt():
    row = {"id": 7, "conversations": turns(("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2"))}
    record = huatuo.convert(row)
    assert record == {
        "conversations": turns(("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2")),
        "system": MEDICAL_SYSTEM_PROMPT,
    }
    assert huatuo.first_query(record) == "q1"
    assert huatuo.pairs(record) == [("q1", "a1"), ("q2", "a2")]
    assert huatuo.with_pairs(record, [("q1", "a1"), ("q2", "a2!")])["conversations"][-1] == {"from": "gpt", "value": "a2!"}


def test_huatuo_trailing_human_turn_dropped_and_noted():
    record = huatuo.convert({"conversations": turns(("human", "q1"), ("gpt", "a1"), ("human", "thanks"))})
    assert record["conversations"] == turns(("human", "q1"), ("gpt", "a1"))
    assert record["_notes"] == [huatuo.TRAILING_HUMAN_TURN]


def test_huatuo_v1_shape_strips_prefixes():
    record = huatuo.convert({"data": ["问：头疼怎么办？", "答：多休息。", "问:还要吃药吗", "答: 不用"]})
    assert record["conversations"] == turns(
        ("human", "头疼怎么办？"), ("gpt", "多休息。"), ("human", "还要吃药吗"), ("gpt", "不用")
    )


def test_huatuo_skip_reasons():
    assert huatuo.convert("text") == Skip(NOT_AN_OBJECT, "str")
    assert huatuo.convert({"id": 1}).reason == MISSING_FIELD
    assert huatuo.convert({"conversations": "human: hi"}).reason == UNKNOWN_SHAPE
    assert huatuo.convert({"conversations": [["human", "hi"]]}).reason == UNKNOWN_SHAPE
    assert huatuo.convert({"conversations": []}).reason == EMPTY_AFTER_STRIP
    assert huatuo.convert({"conversations": [{"from": "human"}]}).reason == MISSING_FIELD
    assert huatuo.convert({"conversations": turns(("human", 3))}).reason == NON_STRING_FIELD
    assert huatuo.convert({"conversations": turns(("human", " "), ("gpt", "a"))}).reason == EMPTY_AFTER_STRIP
    assert huatuo.convert({"conversations": turns(("gpt", "a"), ("human", "q"))}).reason == BAD_ROLE_ORDER
    assert huatuo.convert({"conversations": turns(("human", "q"), ("human", "q2"))}).reason == BAD_ROLE_ORDER
    assert huatuo.convert({"conversations": turns(("human", "q"), ("system", "s"))}).reason == BAD_ROLE_ORDER
    assert huatuo.convert({"conversations": turns(("human", "only a question"))}).reason == BAD_ROLE_ORDER
    assert huatuo.convert({"data": ["答：先回答", "问：再提问"]}).reason == BAD_ROLE_ORDER
    assert huatuo.convert({"data": ["问：q", 5]}).reason == NON_STRING_FIELD


def test_huatuo_scrub_masks_human_turns_only():
    record = huatuo.convert({"conversations": turns(("human", "邮箱a@b.com"), ("gpt", "请发到x@y.org"))})
    scrubbed, counts = huatuo.scrub(record)
    assert scrubbed["conversations"][0]["value"] == "邮箱[邮箱]"
    assert scrubbed["conversations"][1]["value"] == "请发到x@y.org"
    assert counts["email"] == 1
