"""One-shot chat: the medical system prompt by default, and never a <think> block."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caretune.serving.chat import ThinkFilter, strip_think
from tests.helpers import tiny_recipe


def test_strip_think():
    assert strip_think("<think>\n推理\n</think>\n\n建议就医。") == "建议就医。"
    assert strip_think("<think>\n\n</think>\n\n多喝水") == "多喝水"
    assert strip_think("答案<think>未闭合") == "答案"  # an unclosed block (cut off mid-thought) is hidden
    assert strip_think("a</think>b") == "ab"
    assert strip_think("没有思考块") == "没有思考块"


@pytest.mark.lf
@pytest.mark.slow
def test_chat_answers_once_without_think(tmp_path, monkeypatch):
    from caretune.serving import chat

    recipe = tiny_recipe(tmp_path, "chat", max_new_tokens=24)

    seen = {}
    from llamafactory.chat import ChatModel

    original = ChatModel.stream_chat

    def spy(self, messages, system=None, **kwargs):
        seen["system"] = system
        return original(self, messages, system=system, **kwargs)

    monkeypatch.setattr(ChatModel, "stream_chat", spy)
    text = "".join(chat.ChatSession(str(recipe)).stream("头疼怎么办？")).strip()
    assert isinstance(text, str) and "<think>" not in text and "</think>" not in text
    assert "医生" in seen["system"]


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
