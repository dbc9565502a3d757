"""`caretune judge pairwise`: the base model against the tuned one on the same held-out questions.

Each pair is judged twice, with the answers in both orders; a pair whose two verdicts disagree is a tie (as
MT-Bench and AlpacaEval do, since judges favour a position). Results are win/tie/loss shares of the tuned
model with 95% Wilson intervals, beside each side's mean answer length.

Judges favour longer answers, so two length-controlled figures stand beside the raw ones:
- `length_controlled.win_rate`: AlpacaEval 2's form on one comparison, its model and length terms only (its
  instruction-difficulty terms are fitted across many models and cannot be identified from one comparison). Each
  judged pair's outcome (win 1, tie 0.5, loss 0) is fitted by p = sigmoid(a + b * tanh(d / sd)), d the tuned answer's
  length minus the base answer's (characters), sd the standard deviation of d (AlpacaEval's scale); sigmoid(a) is the
  rate were both answers equally long, with a bootstrap interval over prompts. It is withheld, with the reason, when
  the tuned answer is shorter (or longer) in under 10% of the pairs, or the fit separates: length and model cannot
  then be told apart (simulations in the evaluation README).
- `length_matched`: win/tie/loss over the pairs whose two answers differ by at most 10% in length.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from caretune.evaluation.grader_prompts import DEFAULT_LANGUAGE, pairwise_instructions
from caretune.evaluation.judge import Judge, JudgeCall, masked, write_outputs
from caretune.evaluation.rubric import conversation_text
from caretune.evaluation.stats import fit_length_logistic, length_feature, percentile_interval, separates, sigmoid, wilson

DEFAULT_SAMPLE = 200
WINNERS = ("A", "B", "tie")
BASE, TUNED, TIE = "base", "tuned", "tie"


def question_id(messages: list[dict]) -> str:
    """A stable id of a held-out question (its text's hash)."""
    return hashlib.sha256(messages[-1]["content"].encode("utf-8")).hexdigest()[:16]


def sample_rows(rows: list, size: int) -> list:
    """`size` rows chosen by the hash of their question: the same rows on every run and machine."""
    return sorted(rows, key=lambda row: question_id(row[0]))[:size]


def pair_call(messages: list[dict], first: str, second: str, language: str = DEFAULT_LANGUAGE, general: bool = False) -> JudgeCall:
    """The grader's question for one order of a pair (patient text masked); `general`: the everyday-request grader."""
    content = (
        f"{pairwise_instructions(language, general)}\n\n<conversation>\n{conversation_text(tuple(messages))}\n</conversation>\n\n"
        f"<answer_A>\n{masked(first)}\n</answer_A>\n\n<answer_B>\n{masked(second)}\n</answer_B>"
    )
    return JudgeCall(messages=({"role": "user", "content": content},), field="winner", allowed=WINNERS)


def combine(base_first: str | None, tuned_first: str | None) -> str | None:
    """The pair's result from its two verdicts (base shown as A, then tuned shown as A): the side both name,
    else a tie; None when either verdict was unparsed."""
    if base_first is None or tuned_first is None:
        return None
    one = {"A": BASE, "B": TUNED, "tie": TIE}[base_first]
    two = {"A": TUNED, "B": BASE, "tie": TIE}[tuned_first]
    return one if one == two else TIE


def tally(results: list[str | None]) -> dict:
    """Win (tuned better), tie and loss counts, shares and intervals over the judged pairs."""
    counts = Counter(r for r in results if r is not None)
    judged = sum(counts.values())
    names = {"win": TUNED, "tie": TIE, "loss": BASE}
    return {
        **{name: counts[side] for name, side in names.items()},
        "judged": judged,
        "shares": {name: round(counts[side] / judged, 4) if judged else None for name, side in names.items()},
        "ci": {name: wilson(counts[side], judged) for name, side in names.items()},
    }


MATCHED_WITHIN = 0.10  # length-matched pairs: lengths within 10% of the longer answer
MIN_SIDE_SHARE = 0.10  # length control needs at least this share of pairs with the tuned answer shorter, and longer
SEPARATING_SLOPE = 6.0  # a fitted length coefficient past this: length alone decides the verdicts (see the README)
BOOTSTRAP_DRAWS = 1000
OUTCOME = {TUNED: 1.0, TIE: 0.5, BASE: 0.0}


def length_control(results: list[str | None], base_lengths: list[int], tuned_lengths: list[int], seed: int = 0) -> dict:
    """The raw preference rate (ties as half) and the length-controlled one (AlpacaEval 2's model and length terms on
    one comparison: sigmoid(a) of p = sigmoid(a + b tanh(d / sd))), each with a percentile bootstrap interval over
    prompts; win/tie/loss over length-matched pairs. The controlled figure is withheld, with the reason, when the length
    differences do not fall on both sides of zero in at least MIN_SIDE_SHARE of the pairs each, or the fit separates."""
    import random

    judged = [(OUTCOME[r], t - b, b, t) for r, b, t in zip(results, base_lengths, tuned_lengths) if r is not None]
    empty = {"raw_win_rate": None, "raw_ci": None, "win_rate": None, "ci": None, "withheld": "no judged pair"}
    if not judged:
        return {**empty, "length_coefficient": None, "tuned_shorter_share": None, "length_matched": None}
    outcomes, differences = [o for o, _, _, _ in judged], [d for _, d, _, _ in judged]
    features = length_feature(differences)
    rng = random.Random(seed)
    draws = [[rng.randrange(len(judged)) for _ in judged] for _ in range(BOOTSTRAP_DRAWS)]
    shorter, longer = (sum(d < 0 for d in differences) / len(judged), sum(d > 0 for d in differences) / len(judged))
    a, b = fit_length_logistic(outcomes, features)
    withheld = None
    if min(shorter, longer) < MIN_SIDE_SHARE:
        withheld = (
            f"the tuned answer is shorter in {shorter:.0%} and longer in {longer:.0%} of the pairs: under "
            f"{MIN_SIDE_SHARE:.0%} on one side, the model's and the length's shares cannot be told apart"
        )
    elif separates(outcomes, features) or abs(b) > SEPARATING_SLOPE:
        withheld = "the fit separates: the length difference alone sorts the wins from the losses"
    controlled = ci = None
    if withheld is None:
        controlled = round(sigmoid(a), 4)
        ci = percentile_interval(
            [sigmoid(fit_length_logistic([outcomes[i] for i in d], [features[i] for i in d])[0]) for d in draws]
        )
    matched = [
        {1.0: TUNED, 0.5: TIE, 0.0: BASE}[o] for o, d, base, tuned in judged if abs(d) <= MATCHED_WITHIN * max(base, tuned, 1)
    ]
    return {
        "raw_win_rate": round(sum(outcomes) / len(outcomes), 4),
        "raw_ci": percentile_interval([sum(outcomes[i] for i in d) / len(d) for d in draws]),
        "win_rate": controlled,
        "ci": ci,
        "withheld": withheld,
        "length_coefficient": round(b, 4),
        "tuned_shorter_share": round(shorter, 4),
        "length_matched": tally(matched),
    }


GENERAL_PROMPTS = Path(str(files("caretune") / "data" / "general_prompts_zh.jsonl"))  # package data


def general_rows(path: str | Path = GENERAL_PROMPTS) -> list[tuple[list[dict], str, str]]:
    """The general prompt set as pairwise rows (messages, no reference, the medical system prompt: the served one)."""
    from caretune.basics.errors import UserError
    from caretune.constants import MEDICAL_SYSTEM_PROMPT
    from caretune.evaluation.rubric import json_lines

    rows = []
    for number, row in json_lines(Path(path)):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{path}:{number}: `prompt` must be text")
        rows.append(([{"role": "user", "content": row["prompt"]}], "", MEDICAL_SYSTEM_PROMPT))
    return rows


def _prompt_messages(path: Path, number: int, prompt: object) -> list[dict]:
    """A prompt as chat messages: text is one user turn; a list must be messages ending in a user turn."""
    from caretune.basics.errors import UserError

    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant")
            for m in prompt
        )
        and prompt[-1]["role"] == "user"
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise UserError(f"{path}:{number}: `prompt` must be text or a list of chat messages ending in a user turn")


def read_answer_file(path: str | Path) -> dict[str, tuple[list[dict], str]]:
    """`{"prompt_id", "prompt", "response"}` JSON Lines, made anywhere (vLLM, another stack, a vendor model): prompt id
    -> (messages, response). A bad line is one error naming the file and line."""
    from caretune.evaluation.rubric import answer_lines

    return {
        prompt_id: (_prompt_messages(Path(path), number, row.get("prompt")), response)
        for number, prompt_id, response, row in answer_lines(path)
    }


def answered_elsewhere(base_file: str | Path, tuned_file: str | Path) -> tuple[list, Callable, dict]:
    """The rows, answer function and unmatched prompt ids of `judge pairwise --answers BASE TUNED`: the prompts both
    files answer (the same prompt in both, or an error), each side's answers as written."""
    from caretune.basics.errors import UserError

    files = {BASE: read_answer_file(base_file), TUNED: read_answer_file(tuned_file)}
    shared = [prompt_id for prompt_id in files[BASE] if prompt_id in files[TUNED]]
    for prompt_id in shared:
        if files[BASE][prompt_id][0] != files[TUNED][prompt_id][0]:
            raise UserError(f"{tuned_file}: prompt_id {prompt_id!r} holds another prompt than in {base_file}")
    if not shared:
        raise UserError(f"{base_file} and {tuned_file} share no prompt_id: nothing to compare")
    rows = []
    for prompt_id in shared:
        messages = files[BASE][prompt_id][0]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        rows.append(([m for m in messages if m["role"] != "system"], "", system))
    by_prompt = {side: {json.dumps(files[side][p][0], ensure_ascii=False): files[side][p][1] for p in shared} for side in files}
    paths = {str(base_file): BASE, str(tuned_file): TUNED}

    def answer(path: str, conversations: list[tuple[list[dict], str | None]]) -> list[str]:
        side = paths[path]
        return [
            by_prompt[side][json.dumps(([{"role": "system", "content": system}] if system else []) + messages, ensure_ascii=False)]
            for messages, system in conversations
        ]

    unmatched = {
        "base_only": sorted(set(files[BASE]) - set(shared)),
        "tuned_only": sorted(set(files[TUNED]) - set(shared)),
    }
    return rows, answer, unmatched


def run_pairwise(
    rows: list[tuple[list[dict], str, str]],
    answer: Callable[[str, list[tuple[list[dict], str | None]]], list[str]],
    recipes: dict[str, str],
    judge: Judge,
    out: Path,
    sample: int = DEFAULT_SAMPLE,
    trained_by: dict | None = None,
    language: str = DEFAULT_LANGUAGE,
    general: bool = False,
    unmatched: dict | None = None,
) -> dict:
    """Answer the sampled held-out questions with both recipes (`answer(recipe, conversations)`), judge each pair
    in both orders, and write judge.json, verdicts.jsonl and answers.jsonl into `out`. `unmatched`: the prompt ids
    answered on one side only (answers made elsewhere), recorded in the report."""
    chosen = sample_rows(rows, sample)
    conversations = [(messages, system or None) for messages, _, system in chosen]
    answers = {side: answer(recipes[side], conversations) for side in (BASE, TUNED)}
    calls = [
        (
            pair_call(messages, answers[BASE][i], answers[TUNED][i], language, general),
            pair_call(messages, answers[TUNED][i], answers[BASE][i], language, general),
        )
        for i, (messages, _, _) in enumerate(chosen)
    ]
    verdicts = judge.verdicts([call for pair in calls for call in pair], "pairwise")
    model = judge.endpoint.model
    results, rows_out = [], []
    for i, ((messages, _, _), (base_first, tuned_first)) in enumerate(zip(chosen, calls)):
        first, second = verdicts[base_first.key(model)], verdicts[tuned_first.key(model)]
        result = combine(first["winner"], second["winner"])
        results.append(result)
        rows_out.append(
            {
                "question_id": question_id(messages),
                "base_shown_first": first["winner"],
                "tuned_shown_first": second["winner"],
                "result": result,
                "unparsed": first["unparsed"] or second["unparsed"],
                "failed": [first.get("failed"), second.get("failed")],
                "why": [first.get("why"), second.get("why")],
                "chars": {BASE: len(answers[BASE][i]), TUNED: len(answers[TUNED][i])},
                "explanations": [first.get("explanation"), second.get("explanation")],
                "cached": [first["cached"], second["cached"]],
            }
        )
    report = {
        "mode": "pairwise",
        "base": recipes[BASE],
        "tuned": recipes[TUNED],
        "trained_by": trained_by,
        "sample": len(chosen),
        "grader_language": language,
        "questions": "general prompts" if general else "shared prompts" if unmatched is not None else "held-out medical questions",
        "unmatched": unmatched,
        **tally(results),
        "failed_pairs": sum(bool(row["failed"][0] or row["failed"][1]) for row in rows_out),
        "mean_answer_chars": {side: round(sum(map(len, answers[side])) / len(chosen), 1) if chosen else None for side in answers},
        "length_controlled": length_control(results, [len(a) for a in answers[BASE]], [len(a) for a in answers[TUNED]]),
        **judge.summary(),
    }
    from caretune.basics.files import AtomicFile

    out.mkdir(parents=True, exist_ok=True)
    with AtomicFile(out / "answers.jsonl") as handle:
        for i, (messages, _, _) in enumerate(chosen):
            row = {"question_id": question_id(messages), BASE: answers[BASE][i], TUNED: answers[TUNED][i]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.commit()
    write_outputs(out, report, rows_out)
    return report
