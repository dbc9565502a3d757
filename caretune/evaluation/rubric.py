"""`caretune judge rubric`: physician-style rubrics in HealthBench's file format, judged criterion by criterion.

A rubric file is JSON Lines, one prompt a line, exactly as HealthBench ships it:

    {"prompt_id": "...", "prompt": [{"role": "user", "content": "..."}, ...],
     "rubrics": [{"criterion": "...", "points": 5, "tags": ["axis:accuracy"]}, ...],
     "example_tags": ["theme:emergency_referrals"]}

Other keys (HealthBench's `ideal_completions_data`, `canary`) are ignored. A criterion with negative points
describes harm: meeting it costs its points.

The score, as HealthBench's: an example scores (points of the criteria met) / (its positive points), which
can be negative; the overall score is the mean over examples clipped to [0, 1], with a 95% interval from
1,000 bootstrap resamples of the examples (seeded). A tag's score is the same over the criteria carrying it
(criterion tags) or over the examples carrying it (example tags). An example with a criterion the judge's
reply left unparsed is left out of every score and listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.evaluation.grader_prompts import DEFAULT_LANGUAGE, rubric_instructions
from caretune.evaluation.judge import JudgeCall, masked
from caretune.evaluation.stats import bootstrap_ci, clipped_mean

ROLES = ("system", "user", "assistant", "developer")
SHIPPED_RUBRICS = Path(str(files("caretune") / "data" / "rubrics_zh.jsonl"))  # the Chinese smoke set (package data)


@dataclass(frozen=True)
class Criterion:
    text: str
    points: float | None  # None: not given (HealthBench's meta-evaluation labels criteria without points)
    tags: tuple[str, ...]


@dataclass(frozen=True)
class RubricPrompt:
    prompt_id: str
    messages: tuple[dict, ...]
    criteria: tuple[Criterion, ...]
    tags: tuple[str, ...]  # example tags


def json_lines(path: Path):
    """(line number, object) for every non-blank line; UserError naming the line otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 ({err.reason})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object")
        yield number, row


def parse_messages(value: object, where: str) -> tuple[dict, ...]:
    """Chat messages ending with the user's turn; UserError naming `where` otherwise."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: `prompt` must be a non-empty list of chat messages")
    for message in value:
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise UserError(f"{where}: each message needs a role ({', '.join(ROLES)}) and text content")
    if value[-1]["role"] != "user":
        raise UserError(f"{where}: the last message must be the user's")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _tags(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise UserError(f"{where}: tags must be a list of strings")
    return tuple(value)


def load_rubrics(path: str | Path) -> list[RubricPrompt]:
    """Every prompt of a HealthBench-format file, validated before any call is made."""
    prompts, seen = [], {}
    for number, row in json_lines(Path(path)):
        where = f"{path}:{number}"
        prompt_id = row.get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise UserError(f"{where}: `prompt_id` is missing (answers are matched to prompts by it)")
        if prompt_id in seen:
            raise UserError(f"{where}: prompt_id {prompt_id!r} already on line {seen[prompt_id]}")
        seen[prompt_id] = number
        rubrics = row.get("rubrics")
        if not isinstance(rubrics, list) or not rubrics:
            raise UserError(f"{where}: `rubrics` must be a non-empty list of criteria")
        criteria = []
        for item in rubrics:
            points = item.get("points") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("criterion"), str) or not item["criterion"].strip():
                raise UserError(f"{where}: every rubric item needs a `criterion` text")
            if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
                raise UserError(f"{where}: criterion {item['criterion'][:40]!r}: `points` must be a number")
            criteria.append(Criterion(item["criterion"], float(points), _tags(item.get("tags"), where)))
        prompts.append(
            RubricPrompt(
                prompt_id, parse_messages(row.get("prompt"), where), tuple(criteria), _tags(row.get("example_tags"), where)
            )
        )
    if not prompts:
        raise UserError(f"{path}: no prompts")
    return prompts


def answer_lines(path: str | Path):
    """(line number, prompt_id, response, row) of a `{"prompt_id", "response", …}` JSON Lines file, one answer a prompt;
    a bad line is one UserError naming it."""
    first: dict[str, int] = {}
    for number, row in json_lines(Path(path)):
        prompt_id, response = row.get("prompt_id"), row.get("response")
        if not isinstance(prompt_id, str) or not isinstance(response, str):
            raise UserError(f'{path}:{number}: expected {{"prompt_id": ..., "response": ...}} with text values')
        if prompt_id in first:
            raise UserError(f"{path}:{number}: a second answer for prompt_id {prompt_id!r} (first on line {first[prompt_id]})")
        first[prompt_id] = number
        yield number, prompt_id, response, row


def load_answers(path: str | Path, prompts: list[RubricPrompt]) -> dict[str, str]:
    """`{"prompt_id", "response"}` lines; every prompt must have exactly one answer."""
    answers = {prompt_id: response for _, prompt_id, response, _ in answer_lines(path)}
    missing = [p.prompt_id for p in prompts if p.prompt_id not in answers]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"{path}: no answer for prompt_id {', '.join(map(repr, missing[:3]))}{more}")
    return answers


def conversation_text(messages: tuple[dict, ...]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{masked(m['content'])}" for m in messages)


def criterion_call(messages: tuple[dict, ...], answer: str, criterion: Criterion, language: str = DEFAULT_LANGUAGE) -> JudgeCall:
    """The grader's question for one criterion (every text masked, the criterion's too)."""
    points = "" if criterion.points is None else f' points="{criterion.points:g}"'
    content = (
        f"{rubric_instructions(language)}\n\n<conversation>\n{conversation_text(messages)}\n</conversation>\n\n"
        f"<answer>\n{masked(answer)}\n</answer>\n\n"
        f"<criterion{points}>\n{masked(criterion.text)}\n</criterion>"
    )
    return JudgeCall(messages=({"role": "user", "content": content},), field="criteria_met", allowed=(True, False))


def example_score(criteria: tuple[Criterion, ...] | list[Criterion], met: list[bool]) -> float | None:
    """Points of the criteria met / positive points (None when there are no positive points)."""
    possible = sum(c.points for c in criteria if c.points > 0)
    if possible <= 0:
        return None
    return sum(c.points for c, ok in zip(criteria, met) if ok) / possible


def aggregate(values: list[float]) -> dict:
    """Score, interval and count of a list of example scores."""
    if not values:
        return {"score": None, "ci": None, "n": 0}
    return {"score": round(clipped_mean(values), 4), "ci": bootstrap_ci(values), "n": len(values)}


def nothing_to_earn(prompt: RubricPrompt) -> bool:
    """A prompt whose criteria carry no positive points scores nothing (HealthBench leaves it undefined)."""
    return example_score(prompt.criteria, [False] * len(prompt.criteria)) is None


def score(prompts: list[RubricPrompt], met: dict[tuple[str, int], bool | None]) -> dict:
    """Overall and per-tag scores; `met[(prompt_id, criterion index)]` is None where the reply was unparsed or the
    call failed. Each tag counts once per example: an example tag first, else the criteria carrying it."""
    overall, by_tag, left_out = [], {}, []
    for prompt in prompts:
        verdicts = [met[(prompt.prompt_id, index)] for index in range(len(prompt.criteria))]
        if any(v is None for v in verdicts):
            left_out.append(prompt.prompt_id)
            continue
        whole = example_score(prompt.criteria, verdicts)
        if whole is None:
            continue
        overall.append(whole)
        tagged = dict.fromkeys(prompt.tags, whole)
        for tag in sorted({tag for c in prompt.criteria for tag in c.tags} - set(tagged)):
            subset = [(c, v) for c, v in zip(prompt.criteria, verdicts) if tag in c.tags]
            if (value := example_score([c for c, _ in subset], [v for _, v in subset])) is not None:
                tagged[tag] = value
        for tag, value in tagged.items():
            by_tag.setdefault(tag, []).append(value)
    return {
        **aggregate(overall),
        "examples": len(prompts),
        "left_out_unparsed": left_out,
        "by_tag": {tag: aggregate(values) for tag, values in sorted(by_tag.items())},
    }


def run_rubric(
    prompts: list[RubricPrompt],
    answers: dict[str, str],
    source: str,
    judge,
    out: Path,
    trained_by: dict | None = None,
    language: str = DEFAULT_LANGUAGE,
) -> dict:
    """Judge every criterion of every prompt that has points to earn (the others are listed, with no call made);
    writes judge.json and verdicts.jsonl into `out` (`source` says where the answers came from)."""
    from caretune.evaluation.judge import write_outputs

    skipped = [
        {"prompt_id": p.prompt_id, "reason": "no criterion with positive points: nothing to earn"}
        for p in prompts
        if nothing_to_earn(p)
    ]
    prompts = [p for p in prompts if not nothing_to_earn(p)]
    calls = [
        (p, i, criterion_call(p.messages, answers[p.prompt_id], c, language)) for p in prompts for i, c in enumerate(p.criteria)
    ]
    verdicts = judge.verdicts([call for _, _, call in calls], "rubric")
    met, rows = {}, []
    for prompt, index, call in calls:
        verdict = verdicts[call.key(judge.endpoint.model)]
        criterion = prompt.criteria[index]
        met[(prompt.prompt_id, index)] = verdict["criteria_met"]  # None when unparsed or failed
        rows.append(
            {
                "prompt_id": prompt.prompt_id,
                "criterion": criterion.text,
                "points": criterion.points,
                "tags": list(criterion.tags),
                "criteria_met": verdict["criteria_met"],
                "unparsed": verdict["unparsed"],
                "failed": verdict.get("failed"),
                "why": verdict.get("why"),
                "explanation": verdict.get("explanation"),
                "cached": verdict["cached"],
            }
        )
    report = {
        "mode": "rubric",
        "answers": source,
        "trained_by": trained_by,
        "grader_language": language,
        **score(prompts, met),
        "skipped": skipped,
        "mean_answer_chars": round(sum(len(answers[p.prompt_id]) for p in prompts) / len(prompts), 1) if prompts else None,
        **judge.summary(),
    }
    write_outputs(out, report, rows)
    return report


def generate_answers(recipe, prompts: list[RubricPrompt], backend: str, out: Path) -> dict[str, str]:
    """The recipe's model's answers to every prompt (a leading system message replaces the recipe's prompt),
    also written to `out`/answers.jsonl for reuse with --answers."""
    from caretune.basics.files import AtomicFile
    from caretune.generation.chat_models import generate

    conversations = []
    for prompt in prompts:
        messages = list(prompt.messages)
        system = messages.pop(0)["content"] if messages[0]["role"] in ("system", "developer") else None
        conversations.append((messages, system))
    answers = dict(zip((p.prompt_id for p in prompts), generate(recipe, conversations, backend)))
    out.mkdir(parents=True, exist_ok=True)
    with AtomicFile(out / "answers.jsonl") as handle:
        for prompt_id, response in answers.items():
            handle.write(json.dumps({"prompt_id": prompt_id, "response": response}, ensure_ascii=False) + "\n")
        handle.commit()
    return answers
