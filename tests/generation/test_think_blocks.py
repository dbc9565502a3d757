"""The <think> policy: what a user sees never holds a think block, however the stream is cut; evaluation can
still tell a leak."""

from hypothesis import given
from hypothesis import strategies as st

from caretune.generation.think_blocks import ThinkFilter, has_think, strip_think


def test_strip_think():
    assert strip_think("<think>\n推理\n</think>\n\n建议就医。") == "建议就医。"
    assert strip_think("<think>\n\n</think>\n\n多喝水") == "多喝水"
    assert strip_think("答案<think>未闭合") == "答案"  # an unclosed block (cut off mid-thought) is hidden
    assert strip_think("a</think>b") == "ab"
    assert strip_think("没有思考块") == "没有思考块"


@given(
    st.lists(st.sampled_from(list("<>/thinkab \n") + ["<think>", "</think>", "答"]), max_size=40).map("".join),
    st.lists(st.integers(min_value=1, max_value=9), max_size=20),
)
def test_streamed_filtering_equals_whole_text_filtering(text, cuts):
    pieces, rest = [], text
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    think_filter = ThinkFilter()
    streamed = "".join(think_filter.feed(piece) for piece in pieces) + think_filter.flush()
    assert streamed.strip() == strip_think(text)
    assert "<think>" not in streamed and "</think>" not in streamed


def test_stream_never_shows_a_block_split_across_tokens():
    think_filter = ThinkFilter()
    tokens = ["<th", "ink>", "推理", "过程</thi", "nk>", "\n\n", "建议", "就医。"]
    shown = [think_filter.feed(t) for t in tokens] + [think_filter.flush()]
    assert "".join(shown) == "建议就医。" and "推理" not in "".join(shown)


def test_a_leak_is_told_in_an_answer_as_generated():
    assert has_think("<think>\n\n</think>\n\n回答") and has_think("答</think>") and not has_think("thinking 思考")
