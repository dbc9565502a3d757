"""The one PII masker (caretune.basics.pii): what it masks, in data, logs and judge requests alike, and what it leaves."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caretune.basics.pii import _ASCII, MASKS, _spans, find_phone, mask_pii, mask_quote


def _unscreened(text: str) -> str:
    """What masking gives without the cheap first scan."""
    out, start = [], 0
    for begin, end, kind in _spans(text.translate(_ASCII)):
        out += (text[start:begin], MASKS[kind])
        start = end
    return "".join(out) + text[start:]


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
    assert masked == _unscreened(text)
    assert (counts is None) == (masked == text)


@pytest.mark.parametrize(
    "text",
    [
        "座机010-62345678",  # a landline with its area code
        "请拨0755-82345678转分机",
        "（010）6234 5678",  # a bracketed area code, the number split
        "(021)62345678",
        "１３８１２３４５６７８",  # full-width digits
        "电话：１３８－１２３４－５６７８",
        "138 1234 5678",  # split by spaces
        "1381 234 5678",  # split elsewhere
        "138-1234-5678",
        "400-123-4567",  # a service line
        "身份证 110101 19900307 1234",  # an ID number in groups
        "１１０１０１１９９００３０７１２３４",
    ],
)
def test_landlines_full_width_and_split_numbers_are_masked(text):
    masked, counts = mask_pii(text)
    assert counts and sum(counts.values()) == 1, (text, masked)
    assert not any(char.isdigit() for char in masked), masked


def test_a_number_beside_a_phone_is_not_swallowed_with_it():
    assert mask_pii("电话13812345678 2023年复查")[0] == "电话[电话] 2023年复查"
    assert find_phone("电话13812345678 2023年复查") == "13812345678"
    assert find_phone("座机（010）6234 5678找我") == "（010）6234 5678"
    assert find_phone("每天饮水1500-2000毫升，必要时拨打120。") is None


def test_a_quote_hides_full_width_digit_runs_too():
    assert mask_quote("编号１２３４５６７") == "编号#######"


def test_ascii_digits_split_by_wide_or_dash_separators_are_masked():
    separated = ("手机 138－1234－5678", "手机 138—1234—5678", "手机 138–1234–5678", "手机 138\u30001234\u30005678")
    for text in (*separated, "400－810－8888"):
        masked, counts = mask_pii(text)
        assert counts and not any(char.isdigit() for char in masked), (text, masked)


def test_scores_and_ranges_in_small_groups_are_not_phone_numbers():
    for text in ("1 3 5 7 9 11 13 15 17 19", "评分 0-20 3-5 6-8 9-10", "血压 120-80 110-70 130-85"):
        assert mask_pii(text) == (text, None), text


def test_masking_is_linear_on_long_adversarial_text():
    import time

    for text in ("0123456789abcdef" * 6000, "1" * 100_000, "@" * 50_000):
        started = time.perf_counter()
        mask_pii(text)
        assert time.perf_counter() - started < 1.0
