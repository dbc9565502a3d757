"""What every request passes before a route reads it: the key, the framing, the body's size and deadline; and the
log line each request leaves, without its text."""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid

from caretune.serving.api.settings import ApiError, ApiSettings, log

ROUTES = ("/v1/chat/completions", "/v1/models", "/docs", "/openapi.json")  # the paths the log names
METHODS = ("GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")  # the methods it names


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
