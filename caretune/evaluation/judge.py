"""A grader model behind any OpenAI-compatible endpoint (a local vLLM, a hospital's gateway, `caretune api`),
called through the official `openai` client.

- Calls run `concurrency` at a time, at temperature 0 with a fixed seed; 429s, 5xx answers and timeouts are
  retried with backoff by the client itself (`retries`).
- The grader is asked for JSON only; its reply is read as JSON (a fenced block is accepted). A reply that does
  not parse is asked again once, then recorded as unparsed: never a crash, never a silent pass or fail.
- Every verdict is cached on disk, keyed by the judge model, the template version and the exact messages sent
  (which hold the prompt, the answer and the criterion, or the pair in its order). A rerun makes no calls; a
  killed run resumes where it stopped.
- Text is masked (phone, ID-card, e-mail: converters.pii) before it is sent, and an endpoint off this machine
  needs an explicit allow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from caretune.hub import is_loopback
from converters.errors import UserError
from converters.pii import mask_pii

TEMPLATE_VERSION = "1"  # bump when a grader prompt changes: verdicts cached under the old prompts are not reused
KEY_ENV = "JUDGE_API_KEY"
SEED = 42
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_RETRIES = 4  # the openai client's own retries: 429, 5xx, timeouts, with exponential backoff
REACHABLE_TIMEOUT_S = 10.0
MAX_VERDICT_TOKENS = 512
CACHE_DIR = Path(".cache") / "judge"
VERDICTS = "verdicts.jsonl"
REPORT = "judge.json"
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


class JudgeError(UserError):
    """The judge cannot be used or stopped answering; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where the judge is and how to call it."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_environment(cls, url: str, model: str, **settings) -> Endpoint:
        """The endpoint with its key from JUDGE_API_KEY (never from the command line, where `ps` shows it)."""
        return cls(url=url.rstrip("/"), model=model, api_key=os.environ.get(KEY_ENV) or None, **settings)


def remote_warning(url: str, allow_remote: bool) -> str | None:
    """None for an endpoint on this machine; for another, the warning to print, or a JudgeError without the allow."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JudgeError(f"--judge-url {url!r}: expected http(s)://HOST[:PORT]/v1")
    if is_loopback(parsed.hostname):
        return None
    if not allow_remote:
        raise JudgeError(
            f"--judge-url {url} is not on this machine: judging sends held-out patient questions there (phone, "
            "ID-card and e-mail masked); pass --allow-remote-judge if that endpoint may receive them"
        )
    return (
        f"held-out patient questions and the model's answers leave this machine for {parsed.hostname} "
        "(phone, ID-card and e-mail masked)"
    )


def masked(text: str) -> str:
    """Text as the judge may see it: personal data replaced by placeholders."""
    return mask_pii(text)[0]


def _same(value: object, expected: object) -> bool:
    """Equal and of the same type (so 1 is not True, and "true" is not True)."""
    return type(value) is type(expected) and value == expected


def parse_reply(text: str, field: str, allowed: tuple) -> dict | None:
    """The grader's JSON (bare or in a fenced block) when it holds `field` with an allowed value, else None."""
    fenced = _FENCED.search(text)
    candidate = fenced.group(1) if fenced else text.strip()
    if not fenced and not candidate.startswith("{"):
        start, end = candidate.find("{"), candidate.rfind("}")
        candidate = candidate[start : end + 1] if 0 <= start < end else candidate
    try:
        reply = json.loads(candidate)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not any(_same(reply.get(field), value) for value in allowed):
        return None
    explanation = reply.get("explanation")
    return {field: reply[field], "explanation": explanation if isinstance(explanation, str) else None}


@dataclass(frozen=True)
class JudgeCall:
    """One question to the grader: the messages sent and the JSON field its reply must hold."""

    messages: tuple[dict, ...]
    field: str
    allowed: tuple

    def key(self, model: str) -> str:
        """The cache key: judge model, template version and the exact messages."""
        payload = json.dumps([TEMPLATE_VERSION, model, self.field, list(self.messages)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    """Verdicts by key, one JSON line each, appended as they arrive (a killed run keeps every finished one;
    a line torn by the kill is ignored)."""

    def __init__(self, folder: Path, model: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
        self.path = Path(folder) / f"{safe}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.verdicts: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.verdicts[entry["key"]] = entry["verdict"]
                except (ValueError, KeyError, TypeError):
                    continue
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        return self.verdicts.get(key)

    def put(self, key: str, verdict: dict) -> None:
        line = (json.dumps({"key": key, "verdict": verdict}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.verdicts[key] = verdict
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write per line: concurrent runs never interleave inside a line
            finally:
                os.close(fd)


class Judge:
    """The grader: cached, parallel, retried calls; `stats` counts calls made, cached answers and unparsed ones."""

    def __init__(self, endpoint: Endpoint, cache_dir: Path = CACHE_DIR, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self.concurrency = concurrency
        self.cache = VerdictCache(cache_dir, endpoint.model)
        self.client = OpenAI(
            base_url=endpoint.url, api_key=endpoint.api_key or "none", timeout=endpoint.timeout_s, max_retries=endpoint.retries
        )
        self.stats: Counter = Counter(calls=0, cached=0, unparsed=0, prompt_tokens=0, completion_tokens=0)
        self._lock = threading.Lock()

    def check_reachable(self) -> None:
        """One quick request before any judging: a dead endpoint or a refused key is one line, within the timeout."""
        import openai

        probe = self.client.with_options(max_retries=0, timeout=min(self.endpoint.timeout_s, REACHABLE_TIMEOUT_S))
        try:
            probe.models.list()
        except openai.APIConnectionError as err:  # refused, unresolvable or timed out
            raise JudgeError(f"judge {self.endpoint.url} is not reachable ({type(err).__name__}): is the server up?") from None
        except openai.AuthenticationError:
            raise JudgeError(f"judge {self.endpoint.url} refused the key: set {KEY_ENV}") from None
        except openai.APIStatusError:
            pass  # it answered: some gateways serve chat completions without /models

    def verdicts(self, calls: list[JudgeCall], label: str) -> dict[str, dict]:
        """Every call's verdict by key: from the cache, else asked now (`label` names the progress bar)."""
        model = self.endpoint.model
        found, todo = {}, {}
        for call in calls:
            key = call.key(model)
            if (verdict := self.cache.get(key)) is not None:
                found[key] = {**verdict, "cached": True}
            elif key not in todo:
                todo[key] = call
        self.stats["cached"] += len(found)
        if todo:
            self._ask_all(todo, found, label)
        self.stats["unparsed"] += sum(verdict["unparsed"] for verdict in found.values())
        return found

    def _ask_all(self, todo: dict[str, JudgeCall], found: dict[str, dict], label: str) -> None:
        """Ask every call in `todo` (by key), `concurrency` at a time, caching each verdict as it arrives."""
        from tqdm import tqdm

        with (
            ThreadPoolExecutor(self.concurrency) as pool,
            tqdm(total=len(todo), desc=label, unit="call", file=sys.stderr, disable=None) as bar,
        ):
            futures = {pool.submit(self._ask, call): key for key, call in todo.items()}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    key = futures[future]
                    verdict = future.result()
                    self.cache.put(key, verdict)
                    found[key] = {**verdict, "cached": False}
                    bar.update()

    def _ask(self, call: JudgeCall) -> dict:
        import openai

        reply = ""
        for attempt in (1, 2):
            try:
                response = self.client.chat.completions.create(
                    model=self.endpoint.model,
                    messages=list(call.messages),
                    temperature=0,
                    seed=SEED,
                    max_tokens=MAX_VERDICT_TOKENS,
                )
            except openai.APIError as err:
                raise JudgeError(
                    f"judge {self.endpoint.url} failed after {self.endpoint.retries} retries ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200]}); verdicts so far are cached: rerun to resume"
                ) from None
            usage = response.usage
            reply = (response.choices[0].message.content or "") if response.choices else ""
            with self._lock:
                self.stats["calls"] += 1
                self.stats["prompt_tokens"] += getattr(usage, "prompt_tokens", 0) or 0
                self.stats["completion_tokens"] += getattr(usage, "completion_tokens", 0) or 0
            if (parsed := parse_reply(reply, call.field, call.allowed)) is not None:
                return {**parsed, "unparsed": False, "attempts": attempt}
        return {call.field: None, "explanation": None, "unparsed": True, "attempts": 2, "reply": reply[:300]}

    def summary(self) -> dict:
        """What judge.json records about the calls."""
        return {
            "judge": {"url": self.endpoint.url, "model": self.endpoint.model, "template_version": TEMPLATE_VERSION},
            "calls": self.stats["calls"],
            "cached": self.stats["cached"],
            "unparsed": self.stats["unparsed"],
            "usage": {"prompt_tokens": self.stats["prompt_tokens"], "completion_tokens": self.stats["completion_tokens"]},
        }


def write_outputs(out: Path, report: dict, verdict_rows: list[dict]) -> Path:
    """judge.json and verdicts.jsonl in `out`, each written to a temporary file and renamed."""
    from converters.writer import AtomicFile, write_json_atomic

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
    cache_dir: Path,
    warn,
) -> Judge:
    """A judge that may be used: the URL allowed (a remote one only with `allow_remote`, said through `warn`),
    the endpoint answering."""
    if (warning := remote_warning(url, allow_remote)) is not None:
        warn(warning)
    endpoint = Endpoint.from_environment(url, model, timeout_s=timeout_s, retries=retries)
    judge = Judge(endpoint, cache_dir, concurrency)
    judge.check_reachable()
    return judge


def default_out(recipe: str | None, fallback: Path, name: str) -> Path:
    """Where a judged run goes: beside a recipe's run (saves/<model>/<run>/judge/NAME), else under `fallback`."""
    if recipe is None:
        return Path(fallback).parent / "judge" / name
    from caretune.training.preflight import load_recipe

    output_dir = load_recipe(recipe).get("output_dir")
    return (Path(output_dir).parent if output_dir else Path(recipe).parent) / "judge" / name
