"""The OpenAI-compatible chat API: validated requests, bounded work, logs without patient text.

- Requests are checked before any work; a bad one gets HTTP 400 with an OpenAI-style error body
  (`error.message`, `error.type`, `error.param`). `max_tokens` is capped at the recipe's max_new_tokens.
- One generation runs at a time; at most `max_queue` requests wait, more get 503 with Retry-After.
  Each request has `request_timeout_s` from arrival (queue included): past it, 504 (or an error event
  when streaming). A client that goes away, or SIGTERM, stops its generation at the next token.
- The log has one line per request: id, method, path, status, prompt and completion tokens, latency.
  Message text is logged only with `log_bodies`, through the converters' PII masker.
- No CORS unless origins are named; with an API key, every route needs it (docs and schema too).
- Admission before any route reads a request (`Admission`): the key, the framing, the body's size counted as it
  arrives, and the deadline over the body; at most MAX_MESSAGES messages.
- Prompt limits, as OpenAI's API behaves, all before any prefill (a bound from bytes before tokenizing): a
  prompt whose tokens plus the capped max_tokens exceed the context gets 400 `context_length_exceeded`; a
  prompt the model would take longer to read than the request has left (at the prefill rate measured on earlier
  requests) gets 504 `prompt_too_slow`; text that cannot be encoded gets 400.
- Message text is text: one holding a chat-control token (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, any
  `<|…|>`) gets 400 naming the token and the message, since the tokenizer would read it as a turn boundary: a user
  message could otherwise open a second system turn after the medical one and undo `enforce`.
- The system prompt policy: `enforce` (default) always uses the recipe's medical prompt and drops a client's
  system messages (counted in the log line, never their text); `prepend` puts the medical prompt before the
  client's; `allow` lets a client's replace it. `model` must be the served name (404 `model_not_found`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from caretune.basics.pii import mask_pii
from caretune.generation.local import CANCELLED, Sampling
from caretune.generation.think import ThinkFilter
from caretune.serving.defaults import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_SYSTEM_POLICY,
    SYSTEM_POLICIES,
)

log = logging.getLogger("caretune.serving.api")

MAX_CHOICES = 4  # `n`, non-streaming only
MAX_MESSAGES = 256  # per request, system ones included; more get 400 before any is read or tokenized
MAX_TEXT_PARTS = 256  # text parts in one message and in all; more get 400 before any part is validated
PART_KEY = re.compile(rb'"type"\s*:')  # a text part's key in a raw body (inside a string its quotes are escaped)
UNHONOURED = ("logprobs", "top_logprobs", "response_format", "functions", "function_call", "logit_bias", "tool_choice")
CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")  # Qwen's chat-control tokens: <|im_start|>, <|im_end|>, <|endoftext|>, …
ROUTES = ("/v1/chat/completions", "/v1/models", "/docs", "/openapi.json")  # the paths the log names
METHODS = ("GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")  # the methods it names
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


@dataclass(frozen=True)
class ApiSettings:
    max_new_tokens: int  # the cap on max_tokens: the recipe's max_new_tokens
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_queue: int = DEFAULT_MAX_QUEUE
    cors_origins: tuple[str, ...] = ()
    log_bodies: bool = False
    api_key: str | None = None
    model_name: str = DEFAULT_SERVED_MODEL_NAME
    system_prompt: str = DEFAULT_SYSTEM_POLICY  # enforce | prepend | allow
    default_system: str | None = None  # the recipe's system prompt (what `prepend` puts first)
    context_length: int | None = None  # prompt + new tokens the model takes (None: not checked)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if self.system_prompt not in SYSTEM_POLICIES:
            raise ValueError(f"system_prompt must be one of {', '.join(SYSTEM_POLICIES)}")


class ApiError(Exception):
    """An OpenAI-style error answer."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        408: "timeout_error",
        413: "invalid_request_error",
        503: "overloaded_error",
        504: "timeout_error",
    }

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        """OpenAI's error object."""
        error = {"message": self.message, "type": self.TYPES.get(self.status, "api_error"), "param": self.param, "code": self.code}
        return {"error": error}

    def response(self) -> JSONResponse:
        """The error as an OpenAI-style JSON response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ---------------------------------------------------------------- requests


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(strict=True)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Any = Field(None, validate_default=True)  # a missing content is a 400, not a crash

    @field_validator("content")
    @classmethod
    def text_only(cls, content):
        """A message's text: a string, or the text parts of a list joined."""
        if isinstance(content, str):
            return content
        if isinstance(content, list) and len(content) > MAX_TEXT_PARTS:
            raise ValueError(f"at most {MAX_TEXT_PARTS} text parts a message")
        if isinstance(content, list) and content:
            try:
                return "".join(TextPart.model_validate(part).text for part in content)
            except ValidationError:
                raise ValueError("only text parts ({'type': 'text', 'text': ...}) are supported") from None
        raise ValueError("must be a string or a non-empty list of text parts")


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, strict=True)


class ChatRequest(BaseModel):
    """The parameters of /v1/chat/completions this server honours; others it does not know are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(strict=True)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)  # the cap is checked before any item
    max_tokens: int | None = Field(None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, strict=True)
    n: int = Field(1, ge=1, le=MAX_CHOICES, strict=True)
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1, strict=True)  # honoured: torch.manual_seed's range
    # known to OpenAI's API but not honoured here: refused (400 unsupported_parameter) instead of ignored
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    functions: Any = None
    function_call: Any = None
    logit_bias: Any = None
    tool_choice: Any = None
    presence_penalty: float = Field(0, ge=-2, le=2, strict=True)
    frequency_penalty: float = Field(0, ge=-2, le=2, strict=True)
    stop: str | list[str] | None = None
    tools: list | None = None


@dataclass(frozen=True)
class Conversation:
    system: str | None
    turns: list[dict[str, str]]
    system_dropped: int = 0  # client system messages `enforce` left out


def apply_system_policy(client_system: list[str], settings: ApiSettings) -> tuple[str | None, int]:
    """(system text, client system messages dropped) under the policy; None is the recipe's own prompt."""
    if not client_system:
        return None, 0
    if settings.system_prompt == "enforce":
        return None, len(client_system)
    joined = "\n".join(client_system)
    if settings.system_prompt == "prepend" and settings.default_system:
        return f"{settings.default_system}\n\n{joined}", 0
    return joined, 0


def conversation_of(request: ChatRequest, settings: ApiSettings) -> Conversation:
    """System text (None: the recipe's) and user/assistant turns ending with the user's, or an ApiError."""
    unsupported = {
        "stop": request.stop,
        "tools": request.tools,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        **{name: getattr(request, name) for name in UNHONOURED},
    }
    if unsupported["response_format"] == {"type": "text"}:  # what every answer is anyway
        unsupported["response_format"] = None
    for name, value in unsupported.items():
        if value:
            raise ApiError(400, f"{name} is not supported by this server", name, code="unsupported_parameter")
    if request.stream and request.n > 1:
        raise ApiError(400, "n > 1 cannot be streamed", "n")
    for index, message in enumerate(request.messages):
        try:
            message.content.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, "the text holds characters that cannot be encoded (a lone surrogate)", f"messages[{index}].content"
            ) from None
        if control := CONTROL_TOKEN.search(message.content):
            raise ApiError(
                400,
                f"the text holds the chat-control token {control.group(0)}, which the model would read as a turn "
                "boundary; send it without it",
                f"messages[{index}].content",
            )
    messages = list(request.messages)
    system = []
    while messages and messages[0].role in ("system", "developer"):
        system.append(messages.pop(0).content)
    for index, message in enumerate(messages, start=len(system)):
        expected = "user" if (index - len(system)) % 2 == 0 else "assistant"
        if message.role != expected:
            raise ApiError(
                400,
                f"expected {'an' if expected == 'assistant' else 'a'} {expected} message here: system messages first, "
                "then user and assistant turns in order, ending with the user's",
                f"messages[{index}].role",
            )
        if message.role == "user" and not message.content.strip():
            raise ApiError(400, "the question is empty", f"messages[{index}].content")
    if not messages or messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question", "messages")
    text, dropped = apply_system_policy(system, settings)
    return Conversation(text, [{"role": m.role, "content": m.content} for m in messages], dropped)


def parse_request(raw: bytes) -> ChatRequest:
    """A request body read and validated (run off the event loop: a large body takes a while): at most MAX_TEXT_PARTS
    text parts in all, counted in the raw bytes before any object is built (a `"type":` key is written that way
    outside strings only), then exactly before any part is validated; problems are ApiErrors."""
    keys = 0
    for _ in PART_KEY.finditer(raw):
        keys += 1
        if keys > MAX_TEXT_PARTS + 8:  # a few more "type" keys may belong to other objects (response_format, tools)
            raise ApiError(400, f"messages: more than {MAX_TEXT_PARTS} text parts; at most {MAX_TEXT_PARTS} in all", "messages")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list) and len(messages) <= MAX_MESSAGES:
        parts = sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list))
        if parts > MAX_TEXT_PARTS:
            raise ApiError(400, f"messages: {parts} text parts; at most {MAX_TEXT_PARTS} in all", "messages")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as err:
        raise validation_error(err) from None


def validation_error(err: RequestValidationError | ValidationError) -> ApiError:
    """The first problem found in a request, as a 400 naming the parameter (e.g. messages[0].content)."""
    first = err.errors()[0]
    location = [part for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON")
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".") or None
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    return ApiError(400, f"{param}: {message}" if param else message, param)


# ---------------------------------------------------------------- bounded work


class Gate:
    """One generation at a time; at most `max_queue` requests wait. Retry-After comes from recent durations."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.durations: deque[float] = deque(maxlen=20)

    def retry_after(self) -> int:
        """Seconds a turned-away client should wait: recent answer time x the queue ahead of it."""
        typical = sum(self.durations) / len(self.durations) if self.durations else 1.0
        return max(1, math.ceil(typical * (self.waiting + 1)))

    def admit(self) -> None:
        """Take a waiting slot before any work on the request (tokenizing included): 503 when the queue is full."""
        if (self.lock.locked() or self.waiting) and self.waiting >= self.max_queue:
            raise ApiError(
                503,
                f"the server is busy ({self.waiting} requests waiting); retry later",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.waiting += 1

    def withdraw(self) -> None:
        """Give back an admitted request's slot (refused before it waited for the model)."""
        self.waiting -= 1

    async def enter(self, deadline: float) -> None:
        """Wait for the model with the slot `admit` gave (504 past the deadline)."""
        try:
            await asyncio.wait_for(self.lock.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ApiError(504, "the request timed out waiting in the queue", code="timeout") from None
        finally:
            self.waiting -= 1

    def leave(self, started: float) -> None:
        """Free the model for the next request and record how long this one held it."""
        self.durations.append(time.monotonic() - started)
        self.lock.release()


@dataclass
class Job:
    """One admitted request's generation, running in a worker thread."""

    deadline: float
    shutdown: threading.Event
    stop: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        """Asked after every token: the client went away, the server is stopping, or time is up."""
        return self.stop.is_set() or self.shutdown.is_set() or time.monotonic() >= self.deadline

    def cancelled_error(self, timeout_s: float) -> ApiError:
        """What to answer a cancelled generation: 503 when shutting down, 504 past the time limit."""
        if self.shutdown.is_set():
            return ApiError(503, "the server is shutting down", code="shutting_down")
        return ApiError(504, f"the answer took longer than the {timeout_s:g} s request limit", code="timeout")


# ---------------------------------------------------------------- the app


class RequestLog:
    """One log line per request, never its text: id, method, path, status, prompt and completion tokens,
    latency. The id is also sent back as `X-Request-Id`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state.update(rid=uuid.uuid4().hex[:16], arrived=time.monotonic())
        status = {"code": 500}

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", state["rid"].encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            outcome = f" ({state['outcome']})" if "outcome" in state else ""
            dropped = f" system_dropped={state['system_dropped']}" if state.get("system_dropped") else ""
            log.info(
                "%s %s %s %s%s prompt_tokens=%s completion_tokens=%s%s %.0f ms",
                state["rid"],
                scope["method"] if scope["method"] in METHODS else "(other method)",  # a client can write anything
                scope["path"] if scope["path"] in ROUTES else "(other path)",  # in either
                status["code"],
                outcome,
                state.get("prompt_tokens", "-"),
                state.get("completion_tokens", "-"),
                dropped,
                1000 * (time.monotonic() - state["arrived"]),
            )


class Admission:
    """What a request must pass before any route reads it, in order: the key (401, the body unread), its framing
    (400 for Transfer-Encoding beside Content-Length, which parsers read differently), its size (413 from
    Content-Length, or as soon as the bytes counted as they arrive would pass the limit) and the deadline (408 when
    the body is still arriving at the request's time limit). The body is then handed on whole."""

    def __init__(self, app, settings: ApiSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), []).append(value)
        if error := self.refusal(headers):
            return await self.refuse(send, error)
        deadline = scope["state"]["arrived"] + self.settings.request_timeout_s
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                limit = self.settings.request_timeout_s
                return await self.refuse(
                    send, ApiError(408, f"the request body was still arriving after {limit:g} s", code="timeout")
                )
            if message["type"] != "http.request":
                return  # the client went away
            piece, more = message.get("body", b""), message.get("more_body", False)
            size += len(piece)
            if size > self.settings.max_body_bytes:
                return await self.refuse(send, self.too_large())
            chunks.append(piece)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    def refusal(self, headers: dict[bytes, list[bytes]]) -> ApiError | None:
        """The error a request's headers alone earn, if any."""
        key = self.settings.api_key
        if key:
            scheme, _, given = b"".join(headers.get(b"authorization", [])[:1]).decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), key.encode()):
                return ApiError(401, "invalid API key: send 'Authorization: Bearer <API_KEY>'", code="invalid_api_key")
        declared = headers.get(b"content-length", [])
        if declared and b"transfer-encoding" in headers:
            return ApiError(400, "the request has both Transfer-Encoding and Content-Length; send one", code="bad_framing")
        if len(declared) > 1 or (declared and not declared[0].isdigit()):
            return ApiError(400, "the request's Content-Length is not one number", code="bad_framing")
        if declared and int(declared[0]) > self.settings.max_body_bytes:
            return self.too_large()
        return None

    def too_large(self) -> ApiError:
        return ApiError(413, f"the request body is over {self.settings.max_body_bytes:,} bytes", code="request_too_large")

    @staticmethod
    async def refuse(send, error: ApiError) -> None:
        """Answer `error` and close: the rest of the body is never read."""
        response = error.response()
        response.headers["connection"] = "close"
        await response({"type": "http"}, None, send)


def internal_error(rid: str, err: BaseException) -> ApiError:
    """A 500 for an unexpected failure, logged with the error's type and frames only: its message could quote patient
    text."""
    log.error("%s failed: %s\n%s", rid, type(err).__name__, "".join(traceback.format_tb(err.__traceback__)).rstrip())
    return ApiError(500, f"internal error ({type(err).__name__}); the server log has request {rid}", code="internal_error")


def create_app(generator, settings: ApiSettings) -> FastAPI:
    """The API over `generator` (caretune.generation.local.LocalGenerator, or anything with its two methods)."""
    app = FastAPI(title="caretune API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.shutdown = threading.Event()  # set on SIGTERM (caretune.serving.serve): generations stop at the next token
    # the app's own threads: asyncio waits for its default executor at exit, and a prompt being read cannot stop
    workers = ThreadPoolExecutor(thread_name_prefix="caretune-api")
    # one body parsed at a time: parsing holds the GIL (about 0.15 s for a 4 MiB body here), and several at once would
    # hold the event loop for their sum
    parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caretune-api-parse")
    gate = Gate(settings.max_queue)
    app.add_middleware(Admission, settings=settings)
    if settings.cors_origins:  # outside admission: a browser's preflight carries no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestLog)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        return validation_error(err).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return ApiError(err.status_code, str(err.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        return internal_error(getattr(request.state, "rid", "-"), err).response()

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="caretune API")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0, "owned_by": "caretune"}]}

    schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": ChatRequest.model_json_schema()}}}}

    @app.post("/v1/chat/completions", openapi_extra=schema)
    async def chat_completions(request: Request):
        raw = await request.body()
        body = await asyncio.get_running_loop().run_in_executor(parser, parse_request, raw)  # the event loop stays free
        try:
            return await complete(body, request, generator, settings, gate, app.state.shutdown, workers)
        except ApiError:
            raise
        except Exception as err:  # noqa: BLE001 (Starlette would re-raise it to uvicorn, which logs its message)
            return internal_error(getattr(request.state, "rid", "-"), err).response()

    return app


async def complete(
    body: ChatRequest,
    request: Request,
    generator,
    settings: ApiSettings,
    gate: Gate,
    shutdown: threading.Event,
    workers: ThreadPoolExecutor,
):
    """One chat completion: validate, encode, wait for the model, then stream or answer whole."""
    state = request.state
    if body.model != settings.model_name:
        raise ApiError(
            404, f"the model {body.model!r} does not exist; this server serves {settings.model_name!r}", "model", "model_not_found"
        )
    conversation = conversation_of(body, settings)
    state.system_dropped = conversation.system_dropped
    limit = min(body.max_completion_tokens or body.max_tokens or settings.max_new_tokens, settings.max_new_tokens)
    sampling = Sampling(max_new_tokens=limit, temperature=body.temperature, top_p=body.top_p, n=body.n, seed=body.seed)
    if settings.context_length and (least := fewest_prompt_tokens(conversation, settings, generator)):
        check_prompt_fits(least, limit, settings, None, state.arrived + settings.request_timeout_s, at_least=True)
    loop = asyncio.get_running_loop()
    gate.admit()  # the queue bounds tokenizing too
    try:
        prompt = await loop.run_in_executor(workers, generator.prompt_ids, conversation.turns, conversation.system)
        state.prompt_tokens = len(prompt)
        check_prompt_fits(len(prompt), limit, settings, generator, state.arrived + settings.request_timeout_s)
    except BaseException:
        gate.withdraw()
        raise
    if settings.log_bodies:
        log.info(
            "%s messages: %s",
            state.rid,
            mask_pii(json.dumps({"system": conversation.system, "turns": conversation.turns}, ensure_ascii=False))[0],
        )
    job = Job(deadline=state.arrived + settings.request_timeout_s, shutdown=shutdown)
    await gate.enter(job.deadline)
    started = time.monotonic()
    if job.should_stop():  # shut down, or out of time, while it waited
        gate.leave(started)
        raise job.cancelled_error(settings.request_timeout_s)
    try:
        check_prompt_fits(len(prompt), limit, settings, generator, job.deadline)  # the wait may have used the time
    except ApiError:
        gate.leave(started)
        raise
    reply = Reply(state.rid, body, settings)
    if body.stream:
        pieces: asyncio.Queue = asyncio.Queue()
        work = loop.run_in_executor(
            workers,
            generator.generate,
            prompt,
            sampling,
            job.should_stop,
            lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text),
        )
        work.add_done_callback(lambda _: (gate.leave(started), pieces.put_nowait(None)))
        return StreamingResponse(
            reply.stream(pieces, work, job, len(prompt), state),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    work = loop.run_in_executor(workers, generator.generate, prompt, sampling, job.should_stop, None)
    work.add_done_callback(lambda _: gate.leave(started))
    watcher = asyncio.create_task(watch(request, job))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done() and shutdown.is_set():  # a prompt still being read cannot stop: it is abandoned, not awaited
        raise job.cancelled_error(settings.request_timeout_s)
    completions = await work  # a departed client's generation stops at its next token
    state.completion_tokens = sum(c.tokens for c in completions)
    if any(c.finish_reason == CANCELLED for c in completions):
        if job.stop.is_set():
            state.outcome = "client gone"
            return JSONResponse({}, status_code=499)
        raise job.cancelled_error(settings.request_timeout_s)
    if settings.log_bodies:
        log.info("%s answer: %s", state.rid, mask_pii(" | ".join(c.text for c in completions))[0])
    return reply.whole(completions, len(prompt))


def fewest_prompt_tokens(conversation: Conversation, settings: ApiSettings, generator) -> int | None:
    """A lower bound on the prompt's tokens, from bytes alone: the system text that will be used and every question
    are at least their bytes over the widest token, and each earlier answer with the question after it adds the
    template's own tokens. An answer's text is not counted: the template strips its think block and leading
    newlines. None when the generator does not say how wide its tokens are."""
    widest = getattr(generator, "max_token_bytes", None)
    if not widest:
        return None
    system = conversation.system if conversation.system is not None else settings.default_system
    questions = [turn["content"] for turn in conversation.turns if turn["role"] == "user"]
    text = sum(math.ceil(len(part.encode("utf-8")) / widest) for part in [system or "", *questions])
    return text + getattr(generator, "exchange_tokens", 0) * (len(questions) - 1)


def check_prompt_fits(
    prompt_tokens: int, new_tokens: int, settings: ApiSettings, generator, deadline: float, at_least: bool = False
) -> None:
    """Refuse, before any prefill, a prompt past the context or one the model would not finish reading in time
    (`at_least`: `prompt_tokens` is a lower bound from the text's bytes, before tokenizing)."""
    if settings.context_length and prompt_tokens + new_tokens > settings.context_length:
        raise ApiError(
            400,
            f"this model's context is {settings.context_length} tokens; the messages take {'at least ' * at_least}"
            f"{prompt_tokens} and "
            f"max_tokens {new_tokens}: shorten the messages or lower max_tokens",
            "messages",
            "context_length_exceeded",
        )
    rate = getattr(generator, "prefill_tokens_per_s", None)
    left = deadline - time.monotonic()
    if rate and prompt_tokens / rate > left:
        raise ApiError(
            504,
            f"reading {prompt_tokens} prompt tokens would take about {prompt_tokens / rate:.0f} s here, more than the "
            f"{max(0.0, left):.0f} s this request has left; shorten the messages",
            "messages",
            "prompt_too_slow",
        )


async def watch(request: Request, job: Job) -> None:
    """Return when the job's client goes away, stopping its generation, or when the server begins to shut down
    (polled: a non-streaming request is never told of either)."""
    while not job.shutdown.is_set():
        if await request.is_disconnected():
            job.stop.set()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


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
