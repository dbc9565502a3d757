"""Requests: the chat-completion schema, parsing with bounded work, and the conversation a request asks for."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from caretune.serving.api.settings import ApiError, ApiSettings

MAX_CHOICES = 4  # `n`, non-streaming only
MAX_MESSAGES = 256  # per request, system ones included; more get 400 before any is read or tokenized
MAX_TEXT_PARTS = 256  # text parts in one message and in all; more get 400 before any part is validated
PART_KEY = re.compile(rb'"type"\s*:')  # a text part's key in a raw body (inside a string its quotes are escaped)
UNHONOURED = ("logprobs", "top_logprobs", "response_format", "functions", "function_call", "logit_bias", "tool_choice")
CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")  # Qwen's chat-control tokens: <|im_start|>, <|im_end|>, <|endoftext|>, …


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
