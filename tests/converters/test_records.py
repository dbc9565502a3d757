"""Pure record helpers: dedupe key, field checks and PII masking."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from caretune.basics.pii import _PII, MASKS, mask_pii
from converters.records import EMPTY_AFTER_STRIP, MISSING_FIELD, NON_STRING_FIELD, Skip, normalise_query, query_key, string_field


def test_query_key_ignores_case_whitespace_and_trailing_punctuation():
    assert query_key("头疼怎么办？") == query_key(" 头疼 怎么办? ") == query_key("头疼怎么办")
    assert query_key("Is HPV serious?") == query_key("is hpv serious")
    assert query_key("头疼怎么办") != query_key("头晕怎么办")


def test_query_key_is_stable_across_processes_and_machines():
    # blake2b of the normalised text, not Python's per-process hash(): values pinned once, the same everywhere.
    assert normalise_query(" 你好！") == "你好"
    assert query_key("你好") == query_key(" 你好！") == 6132876256205393628
    assert query_key("头疼怎么办？") == 15143936366824166261


def test_string_field_reasons():
    assert string_field({"q": " a "}, "q") == "a"
    assert string_field({}, "q") == Skip(MISSING_FIELD, "q")
    assert string_field({"q": None}, "q") == Skip(MISSING_FIELD, "q")
    assert string_field({"q": 3}, "q") == Skip(NON_STRING_FIELD, "q is int")
    assert string_field({"q": " \n"}, "q") == Skip(EMPTY_AFTER_STRIP, "q")


def test_mask_pii_masks_phone_id_card_and_email():
    text = "电话13812345678，或+86 139-1234-5678，身份证110101199003071234，邮箱 li.si@example.com.cn 谢谢"
    masked, counts = mask_pii(text)
    assert counts == Counter(phone=2, id_card=1, email=1)
    assert "13812345678" not in masked and "1391234" not in masked
    assert "110101199003071234" not in masked and "example" not in masked
    assert masked.count("[电话]") == 2 and "[身份证号]" in masked and "[邮箱]" in masked


def test_mask_pii_leaves_medical_numbers_alone():
    for text in [
        "血压150/95，心率55次",
        "体温37.5度，白细胞12.3",
        "ALT 68 U/L，尿酸480μmol/L",
        "订单号123456789012345678901",
        "138123456789（12位，不是手机号）",
        "没有数字的句子",
    ]:
        masked, counts = mask_pii(text)
        assert masked == text and counts is None, text


def test_mask_pii_id_card_with_x_check_digit():
    masked, counts = mask_pii("证件号44030419851231123X。")
    assert masked == "证件号[身份证号]。" and counts == Counter(id_card=1)


PII_FRAGMENTS = [
    "13812345678",
    "138-1234-5678",
    "+86 139 1234 5678",
    "11010519491231002X",
    "a.b@c.com",
    "@",
    "12",
    "-",
    " ",
    "0",
    "X",
    "伤",
    "电话",
]


@given(st.lists(st.sampled_from(PII_FRAGMENTS), max_size=8))
@settings(max_examples=500, deadline=None)
def test_mask_pii_screen_never_skips_a_match(parts):
    """The cheap first scan only rules out texts the full pattern would leave unchanged."""
    text = "".join(parts)
    masked, counts = mask_pii(text)
    assert masked == _PII.sub(lambda m: MASKS[m.lastgroup], text)
    assert (counts is None) == (masked == text)
