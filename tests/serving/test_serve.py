"""The API server and the WebUI, started for real on loopback with the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from caretune.basics.errors import UserError
from caretune.hub import is_loopback
from caretune.serving.serve import check_bind
from tests.helpers import ROOT, free_port, run_caretune, start_caretune, tiny_recipe


def test_loopback_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.9.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(UserError, match="refusing to bind 0.0.0.0 without API_KEY"):
        check_bind("0.0.0.0", None)


def request(url, key=None, body=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_until_up(url, process, timeout=180, **kwargs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            return request(url, **kwargs)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def start(*args, env=None):
    return start_caretune(ROOT, *args, env=env)


def stop(process):
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.poll() is not None


def test_api_refuses_a_public_bind_without_a_key(tmp_path):
    done = run_caretune(ROOT, "api", ROOT / "recipes/tiny-qwen3/chat.yaml", "--host", "0.0.0.0", env={"API_KEY": ""}, timeout=60)
    assert done.returncode == 1 and "refusing to bind 0.0.0.0 without API_KEY" in done.stderr


@pytest.mark.lf
@pytest.mark.slow
def test_api_serves_completions_and_streams_behind_a_key(tmp_path):
    recipe = tiny_recipe(tmp_path, "chat", max_new_tokens=8)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    server = start("api", str(recipe), "--port", str(port), env={"API_KEY": "s3cret"})
    try:
        status, body = wait_until_up(f"{base}/models", server, key="s3cret")
        assert status == 200 and json.loads(body)["data"]
        assert request(f"{base}/models")[0] == 401
        assert request(f"{base}/models", key="wrong")[0] == 401
        message = {"model": "caretune", "messages": [{"role": "user", "content": "头疼怎么办？"}]}
        status, body = request(f"{base}/chat/completions", key="s3cret", body=message)
        reply = json.loads(body)
        assert status == 200 and reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["prompt_tokens"] > 50  # the medical system prompt is in the prompt
        status, body = request(f"{base}/chat/completions", key="s3cret", body={**message, "stream": True})
        events = [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]
        assert status == 200 and len(events) >= 3 and events[-1] == "[DONE]"
        assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
        streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert "<think>" not in streamed and "<think>" not in reply["choices"][0]["message"]["content"]
        assert request(f"{base}/chat/completions", body=message)[0] == 401
    finally:
        stop(server)


@pytest.mark.lf
@pytest.mark.slow
def test_webui_lists_our_datasets(tmp_path):
    port = free_port()
    ui = start("webui", "--port", str(port))
    try:
        status, page = wait_until_up(f"http://127.0.0.1:{port}/", ui)
        assert status == 200 and "gradio" in page.lower()
    finally:
        stop(ui)
    assert not (ROOT / "llamaboard_cache").exists() and not (ROOT / "llamaboard_config").exists()
    assert (ROOT / ".cache" / "llamaboard" / "cache" / "ds_z2_config.json").exists()  # its state, in an ignored folder
    import llamafactory.webui.common as common

    common.DEFAULT_DATA_DIR = str(ROOT)
    from llamafactory.webui.control import list_datasets

    choices = [c[0] if isinstance(c, tuple) else c for c in list_datasets(str(ROOT), "Supervised Fine-Tuning").choices]
    assert {"multi-med", "multi-med-eval", "huatuo2-sft", "huatuo2-eval"} <= set(choices)


BUSY_SERVER = """
import sys, time
from caretune.serving.api import ApiSettings, create_app
from caretune.generation.local import LENGTH, CANCELLED, Completion
from caretune.serving.serve import run_app

class Prefilling:
    '''A prompt whose reading (prefill) cannot be interrupted for 20 s, then one token at a time.'''
    def prompt_ids(self, messages, system):
        return [1] * 10
    def generate(self, prompt_ids, sampling, should_stop, on_text=None):
        time.sleep(20)
        produced = 0
        while produced < sampling.max_new_tokens and not should_stop():
            produced += 1
        return [Completion("好" * produced, produced, CANCELLED if should_stop() else LENGTH)]

run_app(create_app(Prefilling(), ApiSettings(max_new_tokens=8)), "127.0.0.1", int(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stream, stop_signal", [(False, signal.SIGTERM), (True, signal.SIGTERM), (False, signal.SIGINT)])
def test_a_stop_while_a_prompt_is_read_exits_in_time_without_a_traceback(tmp_path, stream, stop_signal):
    """A generation that cannot stop yet (in its prefill) must not hold the exit past SHUTDOWN_GRACE_S, and the
    server's log stays free of tracebacks; the waiting client is told the server is shutting down."""
    import threading

    import httpx

    from caretune.serving.defaults import SHUTDOWN_GRACE_S

    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w", encoding="utf-8") as out:
        server = subprocess.Popen([sys.executable, "-c", BUSY_SERVER, str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    wait_until_up(f"{base}/models", server, timeout=60)
    seen = {}

    def ask():
        body = {"model": "caretune", "messages": [{"role": "user", "content": "头疼"}], "stream": stream}
        try:
            seen["reply"] = httpx.post(f"{base}/chat/completions", json=body, timeout=60).text
        except httpx.HTTPError as err:
            seen["reply"] = f"{type(err).__name__}: {err}"

    client = threading.Thread(target=ask)
    client.start()
    time.sleep(1.5)
    started = time.monotonic()
    server.send_signal(stop_signal)
    try:
        server.wait(timeout=30)
    finally:
        server.kill()
    exit_s = time.monotonic() - started
    client.join(timeout=10)
    output = log.read_text(encoding="utf-8")
    assert exit_s <= SHUTDOWN_GRACE_S, (exit_s, output[-2000:])
    assert "Traceback" not in output and "CancelledError" not in output, output[-3000:]
    assert "shutting_down" in seen["reply"], seen
