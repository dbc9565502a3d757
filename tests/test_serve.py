"""The API server and the WebUI, started for real on loopback with the tiny model."""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from caretune.hub import is_loopback
from caretune.serving.serve import ServeError, check_bind
from tests.helpers import ROOT, free_port, run_caretune, start_caretune, tiny_recipe


def test_loopback_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.9.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(ServeError, match="refusing to bind 0.0.0.0 without API_KEY"):
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
