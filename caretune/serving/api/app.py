"""The app: routes, error handlers, and one chat completion from admission to answer."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from caretune.basics.pii import mask_pii
from caretune.generation.local import CANCELLED, Sampling
from caretune.serving.api.admission import Admission, RequestLog
from caretune.serving.api.gate import Gate, Job, watch
from caretune.serving.api.schema import ChatRequest, Conversation, conversation_of, parse_request, validation_error
from caretune.serving.api.settings import ApiError, ApiSettings, internal_error, log
from caretune.serving.api.streaming import Reply


def create_app(generator, settings: ApiSettings) -> FastAPI:
    """The API over `generator` (caretune.generation.local.LocalGenerator, or anything with its two methods)."""
    app = FastAPI(title="caretune API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.shutdown = threading.Event()  # set on SIGTERM (caretune.serving.serve): generations stop at the next token
    # the app's own threads: asyncio waits for its default executor at exit, and a prompt being read cannot stop
    workers = ThreadPoolExecutor(thread_name_prefix="caretune-api")
    # one body parsed at a time: parsing holds the GIL (about 0.15 s for a 4 MiB body here), and several at once would
    # hold the event loop for their sum
    parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caretune-api-parse")
    served = Served(generator, settings, Gate(settings.max_queue), app.state.shutdown, workers)
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
            return await complete(body, request, served)
        except ApiError:
            raise
        except Exception as err:  # noqa: BLE001 (Starlette would re-raise it to uvicorn, which logs its message)
            return internal_error(getattr(request.state, "rid", "-"), err).response()

    return app


@dataclass(frozen=True)
class Served:
    """What every completion shares: the model, the settings, the queue, the shutdown flag and the worker threads."""

    generator: object
    settings: ApiSettings
    gate: Gate
    shutdown: threading.Event
    workers: ThreadPoolExecutor


async def encode(body: ChatRequest, request: Request, served: Served) -> tuple[list[int], Sampling]:
    """The prompt's token ids and the sampling asked for, once the request is valid, fits and holds a queue slot
    (given back if it is refused): the queue bounds tokenizing too."""
    state, settings, generator = request.state, served.settings, served.generator
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
    served.gate.admit()
    try:
        prompt = await asyncio.get_running_loop().run_in_executor(
            served.workers, generator.prompt_ids, conversation.turns, conversation.system
        )
        state.prompt_tokens = len(prompt)
        check_prompt_fits(len(prompt), limit, settings, generator, state.arrived + settings.request_timeout_s)
    except BaseException:
        served.gate.withdraw()
        raise
    if settings.log_bodies:
        log.info(
            "%s messages: %s",
            state.rid,
            mask_pii(json.dumps({"system": conversation.system, "turns": conversation.turns}, ensure_ascii=False))[0],
        )
    return prompt, sampling


async def complete(body: ChatRequest, request: Request, served: Served):
    """One chat completion: validate, encode, wait for the model, then stream or answer whole."""
    prompt, sampling = await encode(body, request, served)
    state, settings, generator, gate, shutdown = request.state, served.settings, served.generator, served.gate, served.shutdown
    limit, workers, loop = sampling.max_new_tokens, served.workers, asyncio.get_running_loop()
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
