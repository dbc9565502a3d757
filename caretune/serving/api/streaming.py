"""OpenAI-shaped answers: a whole chat.completion, or server-sent chunks that never show a think block."""

from __future__ import annotations

import asyncio
import json
import time

from caretune.generation.local import CANCELLED
from caretune.generation.think_blocks import ThinkFilter
from caretune.serving.api.gate import DISCONNECT_POLL_S, Job
from caretune.serving.api.schema import ChatRequest
from caretune.serving.api.settings import ApiSettings, internal_error


async def next_piece(pieces: asyncio.Queue, job: Job) -> str | None:
    """The next streamed text, or None at the end of the generation or when the server begins to shut down."""
    while True:
        try:
            return await asyncio.wait_for(pieces.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if job.shutdown.is_set():
                return None


class Reply:
    """OpenAI-shaped answers to one request: whole, or as server-sent events."""

    def __init__(self, rid: str, body: ChatRequest, settings: ApiSettings) -> None:
        self.id = f"chatcmpl-{rid}"
        self.created = int(time.time())
        self.model = body.model or settings.model_name
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.settings = settings

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        """OpenAI's usage object."""
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def whole(self, completions, prompt_tokens: int) -> dict:
        """A whole (non-streamed) chat.completion."""
        choices = [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(completions)
        ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(prompt_tokens, sum(c.tokens for c in completions)),
        }

    def event(self, delta: dict | None = None, finish_reason: str | None = None, usage: dict | None = None) -> str:
        """One server-sent event: a chat.completion.chunk with a delta, a finish reason or usage."""
        choices = [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}]
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **({"usage": usage} if usage else {}),
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def stream(self, pieces: asyncio.Queue, work: asyncio.Future, job: Job, prompt_tokens: int, state):
        """The role, the answer as it is generated (no `<think>`), the finish reason, usage if asked, [DONE].
        When the client goes away the server closes this generator and the generation stops at its next token."""
        think = ThinkFilter()
        try:
            yield self.event({"role": "assistant", "content": ""})
            while (piece := await next_piece(pieces, job)) is not None:
                if shown := think.feed(piece):
                    yield self.event({"content": shown})
            failed = work.done() and work.exception() is not None
            completion = work.result()[0] if work.done() and not failed else None  # None: failed, or shut down early
            if completion:
                state.completion_tokens = completion.tokens
            if rest := think.flush():
                yield self.event({"content": rest})
            if completion is None or completion.finish_reason == CANCELLED:  # the response has started: an error event
                err = (
                    internal_error(state.rid, work.exception()) if failed else job.cancelled_error(self.settings.request_timeout_s)
                )
                state.outcome = f"{err.status} {err.code}"
                yield f"data: {json.dumps(err.body(), ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield self.event({}, completion.finish_reason)
            if self.include_usage:
                yield self.event(usage=self.usage(prompt_tokens, completion.tokens))
            yield "data: [DONE]\n\n"
        finally:
            if not work.done() and not job.shutdown.is_set():
                state.outcome = "client gone"
            job.stop.set()
