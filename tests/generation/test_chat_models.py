"""The seam every generating path takes: the ChatModel a user sees (think blocks removed from answers and streams)
or the one evaluation scores (as generated); the keys that build it; greedy answers to many conversations."""

import asyncio
from dataclasses import dataclass

import pytest

from caretune import lf
from caretune.basics.errors import UserError
from caretune.generation import chat_models
from caretune.generation.chat_models import CHAT_KEYS, chat_model

LEAKY = "<think>\n推理\n</think>\n\n建议就医。"


@dataclass
class Response:
    response_text: str


class RecordingChatModel:
    """Stands in for LLaMA-Factory's ChatModel: keeps its arguments, answers with a leaked think block."""

    def __init__(self, args):
        self.args = args

    async def achat(self, *args, **kwargs):
        return [Response(LEAKY)]

    async def astream_chat(self, *args, **kwargs):
        for piece in ["<th", "ink>\n推理\n</thi", "nk>\n\n", "建议", "就医。"]:
            yield piece


@pytest.fixture(autouse=True)
def recording(monkeypatch):
    monkeypatch.setattr(lf, "chat_model_class", lambda: RecordingChatModel)


async def streamed(model) -> str:
    return "".join([piece async for piece in model.astream_chat([])])


def test_what_a_user_sees_never_holds_a_think_block():
    model = chat_model({"template": "qwen3"}, as_shown=True)
    assert asyncio.run(model.achat([]))[0].response_text == "建议就医。"
    assert asyncio.run(streamed(model)) == "建议就医。"


def test_evaluation_scores_answers_as_generated():
    model = chat_model({"template": "qwen3"}, as_shown=False)
    assert asyncio.run(model.achat([]))[0].response_text == LEAKY
    assert asyncio.run(streamed(model)) == LEAKY


def test_a_backend_builds_the_model_from_the_model_keys_only():
    recipe = {key: f"value of {key}" for key in CHAT_KEYS} | {"do_train": True, "learning_rate": 1e-4, "eval_dataset": "x"}
    model = chat_model(recipe, as_shown=False, backend="huggingface")
    assert model.args == {**{key: f"value of {key}" for key in CHAT_KEYS}, "infer_backend": "huggingface"}
    assert chat_model({"max_new_tokens": 8}, as_shown=True).args == {"max_new_tokens": 8}  # a chat recipe as written


def test_vllm_without_vllm_is_one_line(monkeypatch):
    monkeypatch.setattr(chat_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="--backend vllm needs vLLM"):
        chat_model({}, as_shown=False, backend="vllm")


def test_greedy_answers_ask_for_greedy_decoding(monkeypatch):
    asked = {}

    def chat_all(model, calls, **generation):
        asked.update(generation, calls=calls)
        return ["答"] * len(calls)

    monkeypatch.setattr(lf, "chat_all", chat_all)
    calls = [([{"role": "user", "content": "头疼"}], None)]
    assert chat_models.greedy_answers(object(), calls, 32) == ["答"]
    assert asked == {"do_sample": False, "max_new_tokens": 32, "calls": calls}


def test_a_stream_ends_only_once_its_generate_thread_has(monkeypatch):
    """LLaMA-Factory streams from a daemon thread running model.generate, which can outlive the stream's last piece;
    a process exiting then may abort in native code. The stream a user reads waits for it."""
    import threading
    import time

    returned = threading.Event()

    def generate():
        time.sleep(0.3)  # still unwinding after the last piece
        returned.set()

    class Streaming(RecordingChatModel):
        async def astream_chat(self, *args, **kwargs):
            threading.Thread(target=generate, daemon=True).start()
            yield "答"

    monkeypatch.setattr(lf, "chat_model_class", lambda: Streaming)
    assert asyncio.run(streamed(chat_model({}, as_shown=True))) == "答"
    assert returned.is_set()
