"""A grader model behind any OpenAI-compatible endpoint (a local vLLM, a hospital's gateway, `caretune api`),
called through the official `openai` client.

- Calls run `concurrency` at a time, at temperature 0 with a fixed seed. 429s, 5xx answers, timeouts and refused
  connections are tried again with backoff (`retries` more tries, honouring Retry-After); messages count the tries
  made. A 401, 403 or 404 stops the run in one line; a 400 (or 413, 422) fails that one verdict with its reason and
  the run goes on. A 200 that is not a chat completion (a proxy's HTML page, broken JSON) stops the run in one line.
- The grader is asked for JSON only, and its reply is read strictly (`read_verdict`): a leading reasoning block
  dropped, then exactly one JSON object with the asked key, the whole reply or one fenced block; a second
  verdict-shaped object (a draft, a hypothetical) is ambiguous. A reply without exactly one verdict is asked again
  once, sent back with a format reminder, then recorded as unparsed; a reply cut at `max_tokens` is recorded as
  unparsed with that reason (raise --judge-max-tokens). An unparsed verdict is never scored or cached.
- Good verdicts are cached on disk as each arrives, keyed by the judge model, the grader prompt's version and the
  exact messages sent (which hold the prompt, the answer and the criterion, or the pair in its order). Unparsed and
  failed verdicts are not cached: a rerun asks them again and nothing else. Entries are checked when read; a bad one
  is skipped and counted.
- Every text is masked (phone, ID-card, e-mail: caretune.basics.pii) before it is sent, criteria included; an endpoint off
  this machine needs an explicit allow, and a URL carrying a user name or password is refused (the key goes in
  JUDGE_API_KEY, never in a URL that judge.json records).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlparse, urlunparse

from caretune.basics.errors import UserError
from caretune.basics.pii import mask_pii
from caretune.evaluation.verdicts import FORMAT_REMINDER, read_verdict, valid_verdict
from caretune.hub import is_loopback

GRADER_VERSION = "2"  # bump when a grader prompt changes: verdicts cached under the old prompts are not reused
KEY_ENV = "JUDGE_API_KEY"
SEED = 42
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_RETRIES = 4  # further tries of a call after 429, 5xx, a timeout or a refused connection
DEFAULT_MAX_TOKENS = 4096  # room for a reasoning judge's thinking before its verdict
REACHABLE_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 30.0
CACHE_DIR = Path(".cache") / "judge"
VERDICTS = "verdicts.jsonl"
REPORT = "judge.json"
STOPPING_STATUSES = {
    401: "refused the key: set " + KEY_ENV,
    402: "asks for payment",
    403: "forbids this key or model",
    404: "has no such model or path",
    405: "does not serve chat completions there",
    407: "is behind a proxy that wants credentials",
}
FAILING_STATUSES = (400, 413, 422)  # this one request cannot be answered; the others may
RETRIED_STATUSES = (408, 409, 429)  # and 5xx
# A query parameter that carries a credential (api_key, key, token, access_token, sig, signature, secret, password…).
_SECRET_NAME = re.compile(r"key|token|secret|sig|passw|pwd|auth|credential|session", re.IGNORECASE)


@dataclass(frozen=True)
class Endpoint:
    """Where the judge is and how to call it."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def from_environment(cls, url: str, model: str, **settings) -> Endpoint:
        """The endpoint with its key from JUDGE_API_KEY (never from the command line, where `ps` shows it)."""
        return cls(url=url.rstrip("/"), model=model, api_key=os.environ.get(KEY_ENV) or None, **settings)


def remote_warning(url: str, allow_remote: bool) -> str | None:
    """None for an endpoint on this machine; for another, the warning to print, or a UserError without the allow.
    A URL with a user name or password is refused (it would be written to judge.json and replace the key)."""
    try:
        parsed = urlparse(url)
        _ = parsed.port  # a port that is not a number raises here
    except ValueError:
        raise UserError(f"--judge-url {url!r}: not a URL; expected http(s)://HOST[:PORT]/v1") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"--judge-url {url!r}: expected http(s)://HOST[:PORT]/v1")
    if parsed.username is not None or parsed.password is not None:
        raise UserError(f"--judge-url carries a user name or password ({parsed.hostname}): remove it and put the key in {KEY_ENV}")
    secret = next((name for name, _ in parse_qsl(parsed.query, keep_blank_values=True) if _SECRET_NAME.search(name)), None)
    if secret is not None:
        raise UserError(f"--judge-url carries a secret in its query ({secret}=…): remove it and put the key in {KEY_ENV}")
    if is_loopback(parsed.hostname):
        return None
    if not allow_remote:
        raise UserError(
            f"--judge-url {url} is not on this machine: judging sends held-out patient questions there (phone, "
            "ID-card and e-mail masked); pass --allow-remote-judge if that endpoint may receive them"
        )
    return (
        f"held-out patient questions and the model's answers leave this machine for {parsed.hostname} "
        "(phone, ID-card and e-mail masked)"
    )


def recorded_url(url: str) -> str:
    """The URL as records keep it: without its query or fragment (a gateway's parameters stay out of judge.json)."""
    parsed = urlparse(url)
    return urlunparse(parsed._replace(query="", fragment=""))


def masked(text: str) -> str:
    """Text as the judge may see it: personal data replaced by placeholders."""
    return mask_pii(text)[0]


@dataclass(frozen=True)
class JudgeCall:
    """One question to the grader: the messages sent and the JSON field its reply must hold."""

    messages: tuple[dict, ...]
    field: str
    allowed: tuple

    def key(self, model: str) -> str:
        """The cache key: judge model, grader prompt version and the exact messages."""
        payload = json.dumps([GRADER_VERSION, model, self.field, list(self.messages)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    """Good verdicts by key, one JSON line each, appended as they arrive (a killed run keeps every finished one; a
    line torn by the kill, or otherwise malformed, is skipped and counted in `bad`)."""

    def __init__(self, folder: Path, model: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
        self.path = Path(folder) / f"{safe}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.verdicts: dict[str, dict] = {}
        self.bad = 0
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    key, verdict = entry["key"], entry["verdict"]
                    if not isinstance(key, str) or not isinstance(verdict, dict):
                        raise TypeError
                    self.verdicts[key] = verdict
                except (ValueError, KeyError, TypeError):
                    self.bad += line.strip() != ""
        self._lock = threading.Lock()

    def get(self, call: JudgeCall, key: str) -> dict | None:
        """The cached verdict for a call, when it is one a good reply gives (else it counts as bad)."""
        verdict = self.verdicts.get(key)
        if verdict is None:
            return None
        if not valid_verdict(verdict, call.field, call.allowed):
            with self._lock:
                self.bad += 1
            return None
        return verdict

    def put(self, key: str, verdict: dict) -> None:
        line = (json.dumps({"key": key, "verdict": verdict}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.verdicts[key] = verdict
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write per line: concurrent runs never interleave inside a line
            finally:
                os.close(fd)


def _first_line(text: object, limit: int = 160) -> str:
    shown = str(text).strip().splitlines()
    return shown[0][:limit] if shown else ""


def completion_text(body: bytes, content_type: str, url: str) -> tuple[str, str | None, dict]:
    """(reply text, finish_reason, usage) of a chat-completions body; a UserError naming the endpoint and what came
    back when the body is not one."""
    what = f"judge {url} answered 200 with something that is not a chat completion"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what}: the body is not UTF-8 ({content_type or 'no content type'}, {len(body)} bytes)") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise UserError(f"{what}: {content_type or 'no content type'}, {_first_line(text, 80)!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
        raise UserError(f"{what}: JSON without choices[0].message.content ({_first_line(text, 80)!r})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return message.get("content") or "", choices[0].get("finish_reason"), usage


class Judge:
    """The grader: cached, parallel, retried calls; `stats` counts calls made, cached answers, unparsed and failed
    verdicts, and bad cache entries."""

    def __init__(self, endpoint: Endpoint, cache_dir: Path = CACHE_DIR, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self.concurrency = concurrency
        self.cache = VerdictCache(cache_dir, endpoint.model)
        # tries are counted and spaced here, so the client makes exactly one per request
        self.client = OpenAI(base_url=endpoint.url, api_key=endpoint.api_key or "none", timeout=endpoint.timeout_s, max_retries=0)
        self.stats: Counter = Counter(verdicts=0, calls=0, cached=0, unparsed=0, failed=0, prompt_tokens=0, completion_tokens=0)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def check_reachable(self) -> None:
        """One quick request before any judging: a dead endpoint, a refused key or a body that is not an OpenAI model
        list is one line, within the timeout."""
        import openai

        probe = self.client.with_options(timeout=min(self.endpoint.timeout_s, REACHABLE_TIMEOUT_S))
        try:
            raw = probe.models.with_raw_response.list()
        except openai.APIConnectionError as err:  # refused, unresolvable or timed out
            raise UserError(f"judge {self.endpoint.url} is not reachable ({type(err).__name__}): is the server up?") from None
        except openai.AuthenticationError:
            raise UserError(f"judge {self.endpoint.url} refused the key: set {KEY_ENV}") from None
        except openai.APIStatusError:
            return  # it answered: some gateways serve chat completions without /models
        body, kind = raw.http_response.content, raw.http_response.headers.get("content-type", "")
        try:
            listed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            listed = None
        if not isinstance(listed, dict) or not isinstance(listed.get("data"), list):
            shown = _first_line(body.decode("utf-8", errors="replace"), 80)
            raise UserError(
                f"judge {self.endpoint.url} answered /models with something that is not an OpenAI model list "
                f"({kind or 'no content type'}, {shown!r}): is this the /v1 URL of an OpenAI-compatible server?"
            )

    def verdicts(self, calls: list[JudgeCall], label: str) -> dict[str, dict]:
        """Every call's verdict by key: from the cache, else asked now (`label` names the progress bar)."""
        model = self.endpoint.model
        found, todo = {}, {}
        for call in calls:
            key = call.key(model)
            if key in found or key in todo:
                continue
            if (verdict := self.cache.get(call, key)) is not None:
                found[key] = {**verdict, "unparsed": False, "failed": None, "cached": True}
            else:
                todo[key] = call
        self.stats["cached"] += len(found)
        if todo:
            self._ask_all(todo, found, label)
        self.stats["verdicts"] += len(found)
        self.stats["unparsed"] += sum(verdict["unparsed"] for verdict in found.values())
        self.stats["failed"] += sum(verdict["failed"] is not None for verdict in found.values())
        return found

    def _ask_all(self, todo: dict[str, JudgeCall], found: dict[str, dict], label: str) -> None:
        """Ask every call in `todo` (by key), `concurrency` at a time; each good verdict is cached by the worker that
        got it. A stopping error lets the calls under way finish (and be cached), starts no more, then is raised."""
        from tqdm import tqdm

        errors: list[BaseException] = []

        def ask(key: str, call: JudgeCall) -> None:
            if self._stop.is_set():
                return
            try:
                verdict = self._ask(call)
                if not verdict["unparsed"] and verdict["failed"] is None:
                    self.cache.put(key, {call.field: verdict[call.field], "explanation": verdict["explanation"]})
            except _Stopped:
                return
            except BaseException as err:  # a UserError, a full disk or a bug: either way no further call starts
                self._stop.set()
                errors.append(err)
                return
            with self._lock:
                found[key] = {**verdict, "cached": False}
                bar.update()

        with tqdm(total=len(todo), desc=label, unit="call", file=sys.stderr, disable=None) as bar:
            pool = ThreadPoolExecutor(self.concurrency)
            try:
                for future in [pool.submit(ask, key, call) for key, call in todo.items()]:
                    future.result()
            except BaseException:  # Ctrl-C: start nothing more; the calls under way end within their timeout
                self._stop.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                self._stop.clear()
        if errors:
            raise errors[0]

    def _request(self, messages: list[dict]) -> tuple[str, str | None]:
        """One reply (text, finish_reason), with the tries a passing fault deserves; a UserError when the endpoint
        cannot serve the run, a _Failed when this request cannot be answered."""
        import openai

        tries = 1 + self.endpoint.retries
        for attempt in range(1, tries + 1):
            wait = None
            with self._lock:
                self.stats["calls"] += 1
            try:
                body, content_type = self._within_deadline(messages)
            except openai.APIStatusError as err:
                status = err.status_code
                reason = _first_line(getattr(err, "message", err))
                if status in STOPPING_STATUSES:
                    raise UserError(f"judge {self.endpoint.url} {STOPPING_STATUSES[status]} ({status}: {reason})") from None
                if status in FAILING_STATUSES or (400 <= status < 500 and status not in RETRIED_STATUSES):
                    raise _Failed(f"{status}: {reason}") from None
                problem, wait = f"{status}: {reason}", _retry_after(err.response)
            except openai.APIConnectionError as err:  # timed out, refused, reset
                problem = f"{type(err).__name__}: {_first_line(err)}"
            except _PastDeadline as err:
                problem = str(err)
            else:
                text, finish, usage = completion_text(body, content_type, self.endpoint.url)
                with self._lock:
                    for name in ("prompt_tokens", "completion_tokens"):
                        count = usage.get(name)
                        self.stats[name] += count if isinstance(count, int) and not isinstance(count, bool) else 0
                return text, finish
            if attempt == tries:
                raise UserError(
                    f"judge {self.endpoint.url} failed {tries} time(s) in a row ({problem}); verdicts so far are cached: "
                    "rerun to resume"
                )
            if self._stop.wait(wait if wait is not None else min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1))):
                raise _Stopped  # another call stopped the run: no more tries
        raise AssertionError("unreachable")

    def _within_deadline(self, messages: list[dict]) -> tuple[bytes, str]:
        """One completion's body and content type, from connect to last byte within `timeout_s`: the client's own
        timeout bounds connecting and each read, and the body is streamed with the deadline checked at every chunk,
        so a reply trickled a byte at a time is cut there (httpx has no total timeout)."""
        deadline = time.monotonic() + self.endpoint.timeout_s
        with self.client.chat.completions.with_streaming_response.create(
            model=self.endpoint.model, messages=messages, temperature=0, seed=SEED, max_tokens=self.endpoint.max_tokens
        ) as raw:
            chunks = []
            for chunk in raw.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _PastDeadline(f"no whole reply within --timeout {self.endpoint.timeout_s:g}s (a trickled body)")
            return b"".join(chunks), raw.headers.get("content-type", "")

    def _ask(self, call: JudgeCall) -> dict:
        """The verdict of one call: parsed, unparsed (with the reply's start and why) or failed (with the reason). A
        reply without exactly one verdict is asked once more, the reply sent back with a format reminder (the same
        request at temperature 0 and a fixed seed would bring back the same reply)."""
        empty = {call.field: None, "explanation": None}
        messages, reply, why = list(call.messages), "", ""
        for attempt in (1, 2):
            try:
                reply, finish = self._request(messages)
            except _Failed as failed:
                return {**empty, "unparsed": False, "failed": str(failed), "attempts": attempt}
            if finish == "length":  # a draft verdict in a cut reply is not the judge's verdict
                why = f"cut at max_tokens ({self.endpoint.max_tokens}): raise --judge-max-tokens"
                return {**empty, "unparsed": True, "failed": None, "why": why, "attempts": attempt, "reply": reply[:300]}
            parsed, why = read_verdict(reply, call.field, call.allowed)
            if parsed is not None:
                return {**parsed, "unparsed": False, "failed": None, "attempts": attempt}
            reminder = FORMAT_REMINDER.format(field=call.field)
            messages = [*call.messages, {"role": "assistant", "content": reply}, {"role": "user", "content": reminder}]
        return {**empty, "unparsed": True, "failed": None, "why": why, "attempts": 2, "reply": reply[:300]}

    def summary(self) -> dict:
        """What judge.json records about the calls."""
        return {
            "judge": {
                "url": recorded_url(self.endpoint.url),
                "model": self.endpoint.model,
                "grader_version": GRADER_VERSION,
                "max_tokens": self.endpoint.max_tokens,
            },
            "verdicts": self.stats["verdicts"],
            "calls": self.stats["calls"],
            "cached": self.stats["cached"],
            "unparsed": self.stats["unparsed"],
            "failed": self.stats["failed"],
            "bad_cache_entries": self.cache.bad,
            "usage": {"prompt_tokens": self.stats["prompt_tokens"], "completion_tokens": self.stats["completion_tokens"]},
        }


class _PastDeadline(Exception):
    """A reply still arriving when its call's deadline passed; tried again like a timeout."""


class _Failed(Exception):
    """This one request cannot be answered (a 400 and the like); its verdict is recorded as failed."""


class _Stopped(Exception):
    """The run stopped while this call waited to try again."""


def _retry_after(response) -> float | None:
    """Seconds the server asked to wait (Retry-After or retry-after-ms), at most MAX_BACKOFF_S."""
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return min(MAX_BACKOFF_S, max(0.0, float(headers.get(name)) * scale))
        except (TypeError, ValueError):
            continue
    return None


def write_outputs(out: Path, report: dict, verdict_rows: list[dict]) -> Path:
    """judge.json and verdicts.jsonl in `out`, each written to a temporary file and renamed."""
    from caretune.basics.files import AtomicFile, write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    with AtomicFile(out / VERDICTS) as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in verdict_rows))
        handle.commit()
    write_json_atomic(out / REPORT, report)
    return out / REPORT


def open_judge(
    url: str,
    model: str,
    *,
    allow_remote: bool,
    concurrency: int,
    timeout_s: float,
    retries: int,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    cache_dir: Path,
    warn,
) -> Judge:
    """A judge that may be used: the URL allowed (a remote one only with `allow_remote`, said through `warn`),
    the endpoint answering."""
    if (warning := remote_warning(url, allow_remote)) is not None:
        warn(warning)
    endpoint = Endpoint.from_environment(url, model, timeout_s=timeout_s, retries=retries, max_tokens=max_tokens)
    judge = Judge(endpoint, cache_dir, concurrency)
    judge.check_reachable()
    return judge


def default_out(recipe, fallback: Path, name: str) -> Path:
    """Where a judged run goes: beside a Recipe's run (saves/<model>/<run>/judge/NAME), else under `fallback`."""
    from caretune.recipe import RunDir

    return (RunDir(Path(fallback).parent) if recipe is None else recipe.run_dir).judged(name)
