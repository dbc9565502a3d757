"""The API's settings and its OpenAI-style error answer."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from caretune.serving.defaults import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_SYSTEM_POLICY,
    SYSTEM_POLICIES,
)

log = logging.getLogger("caretune.serving.api")


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


def internal_error(rid: str, err: BaseException) -> ApiError:
    """A 500 for an unexpected failure, logged with the error's type and frames only: its message could quote patient
    text."""
    log.error("%s failed: %s\n%s", rid, type(err).__name__, "".join(traceback.format_tb(err.__traceback__)).rstrip())
    return ApiError(500, f"internal error ({type(err).__name__}); the server log has request {rid}", code="internal_error")
