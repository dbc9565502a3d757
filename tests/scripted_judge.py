"""A scripted grader served over real HTTP on 127.0.0.1 with OpenAI's chat-completions shape, for the judge tests.

`script(content, call_number)` decides each reply from the prompt the grader received: it returns the reply text,
or a `Fault` (an HTTP status, a delay that outlasts the client's timeout, a raw body that is not a chat completion,
or a reply cut by length). `models` is what GET /models answers (a Fault with a raw body, or the model list).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Fault:
    status: int = 200  # non-200: answered with an OpenAI error body
    delay_s: float = 0.0  # sleep before answering
    reply: str = ""  # the reply text of a delayed 200
    body: bytes | None = None  # a raw 200 body instead of a chat completion
    content_type: str = "application/json"
    finish_reason: str = "stop"  # "length": the reply was cut at max_tokens
    trickle_s: float = 0.0  # a 200 whose body is sent one byte every trickle_s seconds


def section(content: str, name: str) -> str:
    """The text of <name>…</name> in a grader prompt."""
    match = re.search(rf"<{name}[^>]*>\n(.*?)\n</{name}>", content, re.DOTALL)
    return match.group(1) if match else ""


def keyword_rubric(content: str, _: int) -> str:
    """Criterion met when its [[keyword]] appears in the answer."""
    keyword = re.search(r"\[\[(.+?)\]\]", section(content, "criterion"))
    met = bool(keyword) and keyword.group(1) in section(content, "answer")
    return json.dumps({"criteria_met": met, "explanation": "scripted"})


def prefers(word: str) -> Callable[[str, int], str]:
    """A fair pairwise grader: the answer holding `word` wins, wherever it is shown; else a tie."""

    def script(content: str, _: int) -> str:
        a, b = word in section(content, "answer_A"), word in section(content, "answer_B")
        return json.dumps({"winner": "A" if a and not b else "B" if b and not a else "tie", "explanation": "scripted"})

    return script


def position_biased(content: str, _: int) -> str:
    """A grader that always picks the first answer shown."""
    return json.dumps({"winner": "A", "explanation": "first"})


class ScriptedJudge:
    """The server; `requests` holds every chat-completions body received, `calls` their count."""

    def __init__(self, script: Callable[[str, int], str | Fault], models: Fault | None = None) -> None:
        self.script = script
        self.models = models
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def send_json(self, status: int, body: dict, headers: dict | None = None, trickle_s: float = 0.0) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if trickle_s:
                        for index in range(len(data)):
                            self.wfile.write(data[index : index + 1])
                            self.wfile.flush()
                            time.sleep(trickle_s)
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def send_raw(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if judge.models is not None and judge.models.body is not None:
                    self.send_raw(judge.models.body, judge.models.content_type)
                    return
                self.send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append(body)
                    number = len(judge.requests)
                # the grader prompt: the first user message (a re-ask appends the reply and a format reminder)
                reply = judge.script(next(m["content"] for m in body["messages"] if m["role"] == "user"), number)
                finish, trickle = "stop", 0.0
                if isinstance(reply, Fault):
                    time.sleep(reply.delay_s)
                    if reply.status != 200:
                        error = {"error": {"message": f"scripted fault {reply.status}", "type": "server_error", "code": None}}
                        self.send_json(reply.status, error, {"retry-after-ms": "20"})
                        return
                    if reply.body is not None:
                        self.send_raw(reply.body, reply.content_type)
                        return
                    reply, finish, trickle = reply.reply, reply.finish_reason, reply.trickle_s
                self.send_json(
                    200,
                    {
                        "id": f"chatcmpl-{number}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "scripted"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    },
                    trickle_s=trickle,
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        # shutdown() waits for the serving loop to poll: every 20 ms, not the default half second, in every test
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> ScriptedJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
