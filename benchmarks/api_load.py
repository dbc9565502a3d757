"""`caretune api` under load and abuse, driven by the official `openai` client on a local model.

    python benchmarks/api_load.py RECIPE [--clients 16] [--rounds 3] [--answer-within 10] [--out FILE.json]

Starts `caretune api RECIPE` (its max_new_tokens is the cap), then:
1. load: `--clients` concurrent streaming clients, `--rounds` requests each; latency p50/p99 per request
   (to the last token) and to the first token;
2. abuse: each abusive request, then a normal request that must be answered within `--answer-within` s;
   oversized prompts (a 1 MB prompt, a prompt just past the context, a 5 MB body) must be refused within
   `--refuse-within` s, also while a normal request is answered alongside;
3. SIGTERM while a long answer is generated: the server must exit within `--exit-within` s, without a traceback.
Prints a summary, writes JSON with every figure and check to `--out`, and exits 1 if a check failed.
The server's log is kept beside the JSON and checked for the patient text sent and for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

QUESTION = "我最近总是头疼，晚上睡不好，电话13812345678，该怎么办？"  # a phone number: the log must not show it
PRIVATE_MARKERS = ("头疼", "13812345678")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Server:
    def __init__(self, recipe: str, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.log = log_path.open("w", encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEY": ""}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "caretune.cli", "api", recipe, "--port", str(self.port), *extra],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"caretune api exited with {self.process.returncode}; see {self.log.name}")
            try:
                httpx.get(f"{self.base}/models", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit(f"caretune api did not answer in {timeout:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def client(server: Server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key="unused", max_retries=0, **kwargs)


def ask(server: Server, **request) -> dict:
    """One streamed answer: latency to the first content and to the end, tokens reported by usage."""
    started = time.monotonic()
    first = None
    usage = None
    stream = client(server).chat.completions.create(
        model="caretune",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
        **request,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.monotonic() - started
        usage = chunk.usage or usage
    return {
        "seconds": time.monotonic() - started,
        "first_token_s": first,
        "completion_tokens": usage.completion_tokens if usage else None,
    }


def load(server: Server, clients: int, rounds: int, max_tokens: int) -> dict:
    results, errors = [], []

    def one_client() -> None:
        for _ in range(rounds):
            try:
                results.append(ask(server, max_tokens=max_tokens))
            except openai.APIError as err:
                errors.append(f"{type(err).__name__}: {err}")

    started = time.monotonic()
    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [r["seconds"] for r in results]
    firsts = [r["first_token_s"] for r in results if r["first_token_s"] is not None]
    return {
        "clients": clients,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "answered": len(results),
        "errors": errors,
        "wall_s": round(time.monotonic() - started, 2),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "first_token_p50_s": round(statistics.median(firsts), 3) if firsts else None,
        "tokens": sum(r["completion_tokens"] or 0 for r in results),
    }


def raw_post(server: Server, body, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.base}/chat/completions", json=body, timeout=timeout)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def memory(pid: int, field: str) -> int:
    """A process's VmRSS (resident now) or VmHWM (its peak), in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def whole_answer(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.decode("latin-1")


def question(**fields) -> dict:
    return {"model": "caretune", "messages": [{"role": "user", "content": QUESTION}], **fields}


def abuse(server: Server, cap: int, context: int, answer_within: float, refuse_within: float) -> list[dict]:
    """Each abusive request, what came back, and how long the normal request after it took."""

    def disconnect_whole() -> str:
        try:
            raw_post(server, question(), timeout=0.5)
            return "answered within 0.5 s"
        except httpx.TimeoutException:
            return "client went away after 0.5 s"

    def disconnect_stream() -> str:
        with httpx.stream("POST", f"{server.base}/chat/completions", json=question(stream=True), timeout=30) as reply:
            for count, _ in enumerate(reply.iter_lines()):
                if count >= 5:
                    break
        return "client went away after 5 events"

    def status(body) -> str:
        reply = raw_post(server, body)
        error = reply.json().get("error") if reply.headers.get("content-type", "").startswith("application/json") else None
        return f"{reply.status_code}" + (f" param={error['param']}" if error else "")

    def huge_max_tokens() -> str:
        reply = raw_post(server, question(max_tokens=1_000_000_000))
        return f"{reply.status_code} completion_tokens={reply.json()['usage']['completion_tokens']} (cap {cap})"

    def refused(body_bytes: bytes, expected: int) -> str:
        started = time.monotonic()
        reply = httpx.post(
            f"{server.base}/chat/completions", content=body_bytes, headers={"Content-Type": "application/json"}, timeout=60
        )
        took = time.monotonic() - started
        code = (reply.json().get("error") or {}).get("code") if reply.status_code != 200 else None
        return f"{reply.status_code} {code} in {took:.2f} s" + (
            "" if reply.status_code == expected and took <= refuse_within else " (FAILED)"
        )

    def body(content: str) -> bytes:
        return json.dumps({"model": "caretune", "messages": [{"role": "user", "content": content}]}, ensure_ascii=False).encode()

    def alongside() -> str:
        """A 1 MB prompt sent while a normal request is being answered: both get their answer in time."""
        normal: dict = {}

        def ask_normal() -> None:
            started = time.monotonic()
            ask(server, max_tokens=16)
            normal["s"] = time.monotonic() - started

        thread = threading.Thread(target=ask_normal)
        thread.start()
        outcome = refused(body("头" * 340_000), 400)
        thread.join(timeout=60)
        ok = normal.get("s") is not None and normal["s"] <= answer_within
        return f"{outcome}; the normal request alongside answered in {normal.get('s', float('nan')):.2f} s" + (
            "" if ok else " (FAILED)"
        )

    def flood_alongside(count: int, content: str) -> str:
        """`count` large prompts at once while a normal request is answered: every one refused, the normal one in time."""
        normal: dict = {}
        outcomes: list[str] = []

        def ask_normal() -> None:
            started = time.monotonic()
            ask(server, max_tokens=16)
            normal["s"] = time.monotonic() - started

        threads = [threading.Thread(target=lambda: outcomes.append(refused(body(content), 400))) for _ in range(count)]
        threads.append(threading.Thread(target=ask_normal))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        ok = normal.get("s") is not None and normal["s"] <= answer_within and len(outcomes) == count
        slowest = max((o for o in outcomes), key=lambda o: float(o.split(" in ")[1].split(" ")[0]), default="none")
        return (
            f"{len(outcomes)} refused, the slowest {slowest}; the normal request answered in {normal.get('s', float('nan')):.2f} s"
            + ("" if ok and not any("FAILED" in o for o in outcomes) else " (FAILED)")
        )

    def chunked_flood(total: int) -> str:
        """A chunked body of whitespace-padded JSON, far past the limit: 413 early, the server's memory flat."""
        pid = server.process.pid
        before = {field: memory(pid, field) for field in ("VmRSS", "VmHWM")}
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            sock.sendall(head.encode() + chunk(b'{"model": "caretune", "messages": ['))
            sent, started = 0, time.monotonic()
            sock.settimeout(0.05)
            while sent < total:
                try:
                    sock.sendall(chunk(b" " * 65536))
                    sent += 65536
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            sock.settimeout(10)
            answer = whole_answer(sock)
        code = int(answer.split(" ")[1]) if answer.startswith("HTTP/") else 0
        grown = {field: (memory(pid, field) - before[field]) / 2**20 for field in before}
        took = time.monotonic() - started
        return (
            f"{code} after {sent / 2**20:.1f} MiB sent in {took:.2f} s; the server's RSS {grown['VmRSS']:+.1f} MiB, "
            f"its peak {grown['VmHWM']:+.1f} MiB"
        ) + ("" if code == 413 and sent < total else " (FAILED)")

    def framing() -> str:
        payload = json.dumps(question()).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            sock.sendall(head.encode() + chunk(payload) + b"0\r\n\r\n")
            answer = whole_answer(sock)
        code = int(answer.split(" ")[1]) if answer.startswith("HTTP/") else 0
        return f"{code}" + ("" if code == 400 and "bad_framing" in answer else " (FAILED)")

    many_turns = json.dumps({"model": "caretune", "messages": [{"role": "user", "content": "头"}] * 60_000}).encode()
    cases = [
        ("max_tokens 1000000000", huge_max_tokens),
        ("max_tokens -1", lambda: status(question(max_tokens=-1))),
        ("max_tokens 0", lambda: status(question(max_tokens=0))),
        ("content null", lambda: status({"model": "caretune", "messages": [{"role": "user", "content": None}]})),
        ("content empty", lambda: status({"model": "caretune", "messages": [{"role": "user", "content": "  "}]})),
        ("temperature -1", lambda: status(question(temperature=-1))),
        ("top_p 5", lambda: status(question(top_p=5))),
        ("n 0", lambda: status(question(n=0))),
        ("body not JSON", lambda: f"{httpx.post(f'{server.base}/chat/completions', content=b'{', timeout=10).status_code}"),
        ("client gone (whole answer)", disconnect_whole),
        ("client gone (stream)", disconnect_stream),
        ("1 MB prompt", lambda: refused(body("头" * 340_000), 400)),
        ("prompt past the context", lambda: refused(body("头" * context), 400)),
        ("5 MB body", lambda: refused(body("头" * 1_800_000), 413)),
        ("1 MB prompt alongside a normal request", alongside),
        ("8 parallel 3.9 MB prompts alongside a normal request", lambda: flood_alongside(8, "头" * 1_300_000)),
        ("60,000 one-character turns", lambda: refused(many_turns, 400)),
        ("40 MiB chunked body", lambda: chunked_flood(40 << 20)),
        ("Transfer-Encoding beside Content-Length", framing),
        (
            "patient text in the path",
            lambda: f"{httpx.get(f'{server.base}/{QUESTION}', params={'q': QUESTION}, timeout=10).status_code}",
        ),
    ]
    outcomes = []
    for name, send in cases:
        outcome = send()
        started = time.monotonic()
        try:
            ask(server, max_tokens=16)
            after, error = round(time.monotonic() - started, 3), None
        except openai.APIError as err:
            after, error = None, f"{type(err).__name__}: {err}"
        outcomes.append(
            {
                "request": name,
                "outcome": outcome,
                "next_answer_s": after,
                "next_error": error,
                "ok": error is None and after <= answer_within and "(FAILED)" not in outcome,
            }
        )
    return outcomes


def sigterm(server: Server, exit_within: float) -> dict:
    """SIGTERM while a long answer streams: the exit time and what the client saw."""
    seen = {}

    def long_answer() -> None:
        try:
            seen["result"] = ask(server)
        except openai.APIError as err:
            seen["error"] = str(err)

    thread = threading.Thread(target=long_answer)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=exit_within + 30)
    except subprocess.TimeoutExpired:
        pass
    exit_s = round(time.monotonic() - started, 2)
    thread.join(timeout=10)
    return {
        "exit_s": exit_s,
        "exited": server.process.poll() is not None,
        "client": seen.get("error", "answered"),
        "ok": server.process.poll() is not None and exit_s <= exit_within,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64, help="per request of the load phase")
    parser.add_argument("--answer-within", type=float, default=10.0)
    parser.add_argument("--exit-within", type=float, default=5.0)
    parser.add_argument("--refuse-within", type=float, default=1.0, help="seconds an oversized prompt may take to refuse")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/api_load.json"))
    args = parser.parse_args()
    import yaml

    recipe = yaml.safe_load(Path(args.recipe).read_text(encoding="utf-8"))
    cap = int(recipe.get("max_new_tokens", 1024))
    config = Path(recipe["model_name_or_path"]) / "config.json"  # a local model: its context, unless cutoff_len says
    context = int(recipe.get("cutoff_len") or json.loads(config.read_text(encoding="utf-8"))["max_position_embeddings"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".server.log")
    server = Server(args.recipe, log_path, "--max-queue", str(args.clients))
    try:
        server.wait_up()
        report = {
            "recipe": args.recipe,
            "cap": cap,
            "context": context,
            "load": load(server, args.clients, args.rounds, args.max_tokens),
            "abuse": abuse(server, cap, context, args.answer_within, args.refuse_within),
            "sigterm": sigterm(server, args.exit_within),
        }
    finally:
        server.stop()
    server_log = log_path.read_text(encoding="utf-8")
    report["log_has_patient_text"] = any(marker in server_log for marker in PRIVATE_MARKERS)
    report["log_has_traceback"] = "Traceback" in server_log
    report["ok"] = (
        not report["load"]["errors"]
        and all(case["ok"] for case in report["abuse"])
        and report["sigterm"]["ok"]
        and not report["log_has_patient_text"]
        and not report["log_has_traceback"]
    )
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    load_figures = report["load"]
    print(
        f"load: {load_figures['clients']} streaming clients x {load_figures['rounds']}: {load_figures['answered']} answered, "
        f"{len(load_figures['errors'])} errors, p50 {load_figures['p50_s']} s, p99 {load_figures['p99_s']} s, "
        f"first token p50 {load_figures['first_token_p50_s']} s, wall {load_figures['wall_s']} s"
    )
    for case in report["abuse"]:
        print(
            f"abuse: {case['request']}: {case['outcome']}; next answer in {case['next_answer_s']} s"
            f"{' FAILED ' + str(case['next_error']) if not case['ok'] else ''}"
        )
    print(f"sigterm: exited in {report['sigterm']['exit_s']} s; the streaming client saw: {report['sigterm']['client']}")
    print(
        f"log: patient text {'FOUND' if report['log_has_patient_text'] else 'absent'}, "
        f"tracebacks {'FOUND' if report['log_has_traceback'] else 'absent'}; {'ok' if report['ok'] else 'FAILED'}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
