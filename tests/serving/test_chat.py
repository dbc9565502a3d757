"""One-shot chat: the medical system prompt by default, and never a <think> block."""

import pytest

from tests.helpers import tiny_recipe


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
