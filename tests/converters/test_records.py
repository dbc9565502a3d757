"""Pure record helpers: dedupe key, field checks and PII masking."""

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
