"""One-shot chat: the medical system prompt by default, and never a <think> block."""

import pytest

from caretune.chat import strip_think
from tests.conftest import tiny_recipe


def test_strip_think():
    assert strip_think("<think>\n推理\n</think>\n\n建议就医。") == "建议就医。"
    assert strip_think("<think>\n\n</think>\n\n多喝水") == "多喝水"
    assert strip_think("答案<think>未闭合") == "答案未闭合"
    assert strip_think("a</think>b") == "ab"
    assert strip_think("没有思考块") == "没有思考块"


@pytest.mark.lf
def test_chat_answers_once_without_think(tmp_path, monkeypatch):
    from caretune import chat

    recipe = tiny_recipe(tmp_path, "chat", max_new_tokens=24)

    seen = {}
    from llamafactory.chat import ChatModel

    original = ChatModel.chat

    def spy(self, messages, system=None, **kwargs):
        seen["system"] = system
        return original(self, messages, system=system, **kwargs)

    monkeypatch.setattr(ChatModel, "chat", spy)
    text = chat.answer(str(recipe), "头疼怎么办？")
    assert isinstance(text, str) and "<think>" not in text and "</think>" not in text
    assert "医生" in seen["system"]
