"""caretune.serving.api: validation, bounded work, private logs and browser safety, on a scripted generator served by a
real uvicorn in a thread; then the real server on the tiny model, driven by the official openai client."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

from caretune.generation.local import CANCELLED, LENGTH, STOP, Completion
from caretune.serving.api import ApiSettings, create_app
from tests.helpers import ROOT, free_port, tiny_recipe

QUESTION = "我头疼三天了，电话13812345678，怎么办？"


class ScriptedGenerator:
    """Stands in for LocalGenerator: one token ('好') every `delay` s up to max_new_tokens, or STOP after
    `stop_after`; streams a <think> block first; records what it was asked and where it stopped."""

    def __init__(self, delay: float = 0.0, stop_after: int | None = None, fail: Exception | None = None) -> None:
        self.delay, self.stop_after, self.fail = delay, stop_after, fail
        self.asked, self.systems, self.produced = [], [], []

    def prompt_ids(self, messages, system):
        self.systems.append(system)
        return list(range(sum(len(m["content"]) for m in messages)))

    def generate(self, prompt_ids, sampling, should_stop, on_text=None):
        self.asked.append(sampling)
        if self.fail:
            raise self.fail
        if on_text:
            on_text("<think>想一想</think>\n\n")
        produced, reason = 0, LENGTH
        while produced < sampling.max_new_tokens:
            if should_stop():
                reason = CANCELLED
                break
            time.sleep(self.delay)
            produced += 1
            if on_text:
                on_text("好")
            if self.stop_after and produced >= self.stop_after:
                reason = STOP
                break
        self.produced.append(produced)
        return [Completion("好" * produced, produced, reason) for _ in range(sampling.n)]


@contextmanager
def serving(generator, limits: dict | None = None, **settings):
    """The app on a real uvicorn in a thread, configured as `caretune api` configures it (`limits`: the guarded
    protocol's header deadline and connection limit); yields (base URL, app)."""
    from caretune.serving.serve import uvicorn_config

    app = create_app(generator, ApiSettings(**{"max_new_tokens": 16, **settings}))
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", **(limits or {})))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        app.state.shutdown.set()
        server.should_exit = True
        thread.join(timeout=15)


def question(**fields) -> dict:
    return {"model": "caretune", "messages": [{"role": "user", "content": QUESTION}], **fields}


@pytest.fixture
def api():
    generator = ScriptedGenerator(stop_after=3)
    with TestClient(create_app(generator, ApiSettings(max_new_tokens=16))) as test_client:
        yield test_client, generator


@pytest.mark.parametrize(
    "body, param",
    [
        (question(max_tokens=-1), "max_tokens"),
        (question(max_tokens=0), "max_tokens"),
        (question(max_tokens="5"), "max_tokens"),
        (question(max_tokens=2.5), "max_tokens"),
        (question(temperature=-1), "temperature"),
        (question(temperature=2.5), "temperature"),
        (question(top_p=5), "top_p"),
        (question(top_p=0), "top_p"),
        (question(n=0), "n"),
        (question(n=50), "n"),
        (question(stream="yes"), "stream"),
        (question(presence_penalty=9), "presence_penalty"),
        (question(stop="。"), "stop"),
        (question(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        (question(stream=True, n=2), "n"),
        (question(seed=2**64), "seed"),  # past what torch.manual_seed takes: a 500, or a cut stream, before
        (question(seed=2**64, stream=True), "seed"),
        (question(seed=-(2**63) - 1), "seed"),
        (question(seed=1.5), "seed"),
        ({"model": "caretune", "messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"model": "caretune", "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"model": "caretune", "messages": [{"role": "user", "content": {"text": "hi"}}]}, "messages[0].content"),
        (
            {"model": "caretune", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
            "messages[0].content",
        ),
        ({"model": "caretune", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"model": "caretune", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "caretune", "messages": [{"role": "user", "content": "  \n "}]}, "messages[0].content"),
        ({"model": "caretune", "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]}, "messages[0].content"),
        ({"model": "caretune", "messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
        ({"model": "caretune", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
        (
            {"model": "caretune", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "messages[1].role",
        ),
    ],
)
def test_bad_requests_get_400_with_an_openai_error_body(api, body, param):
    test_client, generator = api
    reply = test_client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert not generator.asked  # nothing was generated


def test_a_body_that_is_not_json_is_a_400(api):
    test_client, _ = api
    for raw in (b"{", b"[1, 2]", b""):
        reply = test_client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error", raw


def test_max_tokens_is_capped_at_the_recipes_max_new_tokens(api):
    test_client, generator = api
    generator.stop_after = None
    for asked, expected in ((1_000_000_000, 16), (None, 16), (5, 5)):
        reply = test_client.post("/v1/chat/completions", json=question(max_tokens=asked))
        assert reply.status_code == 200
        assert generator.asked[-1].max_new_tokens == expected
        usage = reply.json()["usage"]
        assert usage["completion_tokens"] == expected and usage["total_tokens"] == usage["prompt_tokens"] + expected
        assert reply.json()["choices"][0]["finish_reason"] == "length"
    reply = test_client.post("/v1/chat/completions", json=question(max_completion_tokens=7))
    assert generator.asked[-1].max_new_tokens == 7 and reply.status_code == 200


def test_history_reaches_the_model_and_the_medical_prompt_stays(api):
    test_client, generator = api
    conversation = [
        {"role": "system", "content": "你是医生助手。"},
        {"role": "user", "content": "头疼"},
        {"role": "assistant", "content": "多久了？"},
        {"role": "user", "content": "三天"},
    ]
    reply = test_client.post(
        "/v1/chat/completions", json={"model": "caretune", "messages": conversation, "n": 2, "temperature": 0.7}
    )
    assert reply.status_code == 200 and len(reply.json()["choices"]) == 2
    assert generator.systems[-1] is None and generator.asked[-1].n == 2  # enforce: the recipe's prompt, not the client's
    test_client.post("/v1/chat/completions", json=question())
    assert generator.systems[-1] is None  # no system message: the recipe's medical prompt


def test_an_unexpected_failure_is_a_500_body_and_a_log_line_without_patient_text(caplog):
    generator = ScriptedGenerator(fail=ValueError(f"could not read {QUESTION}"))
    with (
        caplog.at_level(logging.INFO, logger="caretune.serving.api"),
        TestClient(create_app(generator, ApiSettings(max_new_tokens=16)), raise_server_exceptions=False) as client,
    ):
        reply = client.post("/v1/chat/completions", json=question())
    assert reply.status_code == 500 and "ValueError" in reply.json()["error"]["message"]
    assert "ValueError" in caplog.text and "头疼" not in caplog.text and "13812345678" not in caplog.text


def test_a_streamed_answer_never_shows_think_and_reports_usage():
    generator = ScriptedGenerator(stop_after=4)
    with serving(generator) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="caretune", messages=question()["messages"], stream=True, stream_options={"include_usage": True}
            )
        )
        whole = client.chat.completions.create(model="caretune", messages=question()["messages"])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "好好好好" and "think" not in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].usage.prompt_tokens == len(QUESTION)
    assert whole.choices[0].message.content == "好好好好" and whole.usage.completion_tokens == 4


def test_a_full_queue_answers_503_with_retry_after():
    generator = ScriptedGenerator(delay=0.05)  # 16 tokens: 0.8 s each
    with serving(generator, max_queue=1) as (base, _):
        replies = []

        def send():
            replies.append(httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        for thread in threads:
            thread.join()
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 503, 503], statuses  # one answered, one waited, two turned away
    for busy in (r for r in replies if r.status_code == 503):
        assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "queue_full"


def test_a_request_past_its_time_limit_stops_and_answers_504():
    generator = ScriptedGenerator(delay=0.05)
    with serving(generator, max_new_tokens=1000, request_timeout_s=0.5) as (base, _):
        started = time.monotonic()
        reply = httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30)
        took = time.monotonic() - started
        assert reply.status_code == 504 and reply.json()["error"]["type"] == "timeout_error" and took < 3
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIError, match="request limit"):
            for _ in client.chat.completions.create(model="caretune", messages=question()["messages"], stream=True):
                pass
    assert all(produced < 20 for produced in generator.produced), generator.produced


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_stops_its_generation(stream):
    generator = ScriptedGenerator(delay=0.02)  # 1000 tokens would take 20 s
    with serving(generator, max_new_tokens=1000) as (base, _):
        if stream:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=question(stream=True), timeout=30) as reply:
                for count, _ in enumerate(reply.iter_lines()):
                    if count >= 6:
                        break
        else:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=0.5)
        started = time.monotonic()
        reply = httpx.post(f"{base}/v1/chat/completions", json=question(max_tokens=2), timeout=30)
        assert reply.status_code == 200 and time.monotonic() - started < 3
    assert generator.produced[0] < 200, generator.produced  # stopped within a few polls, not after 1000


def test_shutdown_ends_running_generations_with_503():
    generator = ScriptedGenerator(delay=0.02)
    with serving(generator, max_new_tokens=1000) as (base, app):
        threading.Timer(0.3, app.state.shutdown.set).start()
        reply = httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30)
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "shutting_down"
        assert httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30).status_code == 503


def test_the_log_has_one_line_per_request_and_no_patient_text(caplog):
    generator = ScriptedGenerator(stop_after=3)
    with caplog.at_level(logging.INFO, logger="caretune.serving.api"), serving(generator) as (base, _):
        reply = httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30)
        httpx.post(f"{base}/v1/chat/completions", json=question(max_tokens=-1), timeout=30)
    lines = [r.getMessage() for r in caplog.records if r.name == "caretune.serving.api"]
    assert len(lines) == 2 and reply.headers["X-Request-Id"] in lines[0]
    assert "POST /v1/chat/completions 200" in lines[0] and f"prompt_tokens={len(QUESTION)}" in lines[0]
    assert "completion_tokens=3" in lines[0] and "ms" in lines[0]
    assert "400" in lines[1]
    assert not any(marker in caplog.text for marker in ("头疼", "13812345678", "好好好"))


def test_log_bodies_logs_text_with_personal_data_masked(caplog):
    generator = ScriptedGenerator(stop_after=3)
    with caplog.at_level(logging.INFO, logger="caretune.serving.api"), serving(generator, log_bodies=True) as (base, _):
        httpx.post(f"{base}/v1/chat/completions", json=question(), timeout=30)
    assert "头疼三天" in caplog.text and "好好好" in caplog.text
    assert "13812345678" not in caplog.text and "[电话]" in caplog.text


def test_cors_is_off_by_default_and_names_origins_when_asked():
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(ScriptedGenerator(), ApiSettings(max_new_tokens=4))) as client:
        assert "access-control-allow-origin" not in client.options("/v1/chat/completions", headers=preflight).headers
        assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "https://evil.example"}).headers
    settings = ApiSettings(max_new_tokens=4, cors_origins=("https://app.example",))
    with TestClient(create_app(ScriptedGenerator(), settings)) as client:
        allowed = client.get("/v1/models", headers={"Origin": "https://app.example"}).headers
        assert allowed["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed
        assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "https://evil.example"}).headers


def test_with_a_key_every_route_needs_it_docs_and_schema_too():
    with TestClient(create_app(ScriptedGenerator(stop_after=1), ApiSettings(max_new_tokens=4, api_key="s3cret"))) as client:
        for path in ("/v1/models", "/docs", "/openapi.json"):
            for header in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "s3cret"},
                {"Authorization": "Basic s3cret"},
                {"Authorization": "Bearer s3cret2"},
                {"Authorization": "Bearer "},
            ):
                reply = client.get(path, headers=header)
                assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key", (path, header)
            assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200, path
        assert client.post("/v1/chat/completions", json=question()).status_code == 401
        ok = client.post("/v1/chat/completions", json=question(), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    with TestClient(create_app(ScriptedGenerator(), ApiSettings(max_new_tokens=4))) as client:
        assert client.get("/openapi.json").status_code == 200  # no key set: open, on loopback only (caretune.serving.serve)


@pytest.mark.lf
@pytest.mark.slow
def test_the_real_server_under_load_and_abuse_with_the_openai_client(tmp_path):
    """benchmarks/api_load.py on the tiny model: streaming clients, each abusive request then a normal one answered
    within 10 s, SIGTERM during a long answer exits within 5 s, no patient text and no traceback in the server's log."""
    recipe = tiny_recipe(tmp_path, "chat", max_new_tokens=2000)
    out = tmp_path / "load.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "api_load.py"),
            str(recipe),
            "--clients",
            "6",
            "--rounds",
            "2",
            "--answer-within",
            "10",
            "--exit-within",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    report = json.loads(out.read_text(encoding="utf-8"))
    assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
    assert report["load"]["answered"] == 12 and not report["load"]["errors"]
    outcomes = {case["request"]: case["outcome"] for case in report["abuse"]}
    huge = re.fullmatch(r"200 completion_tokens=(\d+) \(cap 2000\)", outcomes["max_tokens 1000000000"])
    assert huge and int(huge[1]) <= 2000
    assert outcomes["max_tokens -1"] == "400 param=max_tokens" and outcomes["content null"] == "400 param=messages[0].content"
    for case, expected in (
        ("1 MB prompt", "400 context_length_exceeded"),
        ("prompt past the context", "400 context_length_exceeded"),
        ("5 MB body", "413 request_too_large"),
        ("1 MB prompt alongside a normal request", "400 context_length_exceeded"),
        ("8 parallel 3.9 MB prompts alongside a normal request", "8 refused, the slowest 400 context_length_exceeded"),
        ("60,000 one-character turns", "400 None"),  # the message cap: pydantic's too_long, param messages
        ("40 MiB chunked body", "413 after"),
        ("Transfer-Encoding beside Content-Length", "400"),
        ("patient text in the path", "404"),
    ):
        assert outcomes[case].startswith(expected) and "FAILED" not in outcomes[case], outcomes[case]
    assert report["sigterm"]["exit_s"] <= 5 and "shutting down" in report["sigterm"]["client"]
    assert not report["log_has_patient_text"] and not report["log_has_traceback"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_failure_never_reaches_uvicorns_own_handler_and_a_stream_ends_with_an_error_and_done(stream, caplog):
    """Starlette re-raises after the app's own handler, and uvicorn then logs the whole exception, whose message can
    quote patient text; a stream that failed after it started was cut without an error event or [DONE]."""
    generator = ScriptedGenerator(fail=ValueError(f"could not read {QUESTION}"))
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), serving(generator) as (base, _):
            reply = httpx.post(f"{base}/v1/chat/completions", json=question(stream=stream), timeout=30)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert "Exception in ASGI application" not in caplog.text and "头疼" not in caplog.text and "13812345678" not in caplog.text
    assert "ValueError" in caplog.text  # the caretune log line: the error's type and frames
    if not stream:
        assert reply.status_code == 500 and "ValueError" in reply.json()["error"]["message"]
        return
    events = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "internal_error", events
