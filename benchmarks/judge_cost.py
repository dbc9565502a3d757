"""What one judged run costs in judge calls and tokens, for the default sizes: the shipped rubric set on one model
(one call per criterion), and base against tuned on 200 held-out questions (two calls a pair).

Prompt tokens are counted with the Qwen3 tokenizer on the exact grader prompts caretune sends. The candidate
answers are stand-ins: the shipped ChatMed sample's reference answers, cycled (real answers differ in length;
pass --answer-chars to scale them). Completion tokens are bounded by the verdict cap; a short JSON verdict is
typically 30-80 tokens.

    python benchmarks/judge_cost.py [--pairs 200] [--answer-chars N] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "chatmed_consult_sample.jsonl"


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from caretune.evaluation.judge import DEFAULT_MAX_TOKENS
    from caretune.evaluation.pairwise import DEFAULT_SAMPLE, pair_call
    from caretune.evaluation.rubric import SHIPPED_RUBRICS, criterion_call, load_rubrics
    from caretune.prep.tokenizer import offline_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_SAMPLE)
    parser.add_argument("--answer-chars", type=int, default=None, help="cut or repeat each stand-in answer to this length")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    for line in SAMPLE.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the sample holds deliberate faults
        if isinstance(row, dict) and isinstance(row.get("response"), str) and isinstance(row.get("query"), str):
            rows.append(row)
    answers = [r["response"] for r in rows]
    if args.answer_chars:
        answers = [(a * (args.answer_chars // max(1, len(a)) + 1))[: args.answer_chars] for a in answers]
    tokenizer = offline_tokenizer()

    def tokens(call) -> int:
        text = tokenizer.apply_chat_template(list(call.messages), tokenize=False, add_generation_prompt=True)
        return len(tokenizer.encode(text, add_special_tokens=False))

    prompts = load_rubrics(SHIPPED_RUBRICS)
    cycle = itertools.cycle(answers)
    rubric_calls = [criterion_call(p.messages, next(cycle), c) for p in prompts for c in p.criteria]
    pairs = list(itertools.islice(itertools.cycle(zip(rows, answers, answers[1:] + answers[:1])), args.pairs))
    pair_calls = [
        call
        for row, first, second in pairs
        for call in (
            pair_call([{"role": "user", "content": row["query"]}], first, second),
            pair_call([{"role": "user", "content": row["query"]}], second, first),
        )
    ]
    result = {
        "answer_chars_mean": round(sum(map(len, answers)) / len(answers), 1),
        "rubric_one_model": {"prompts": len(prompts), "calls": len(rubric_calls), "prompt_tokens": sum(map(tokens, rubric_calls))},
        "pairwise": {"pairs": args.pairs, "calls": len(pair_calls), "prompt_tokens": sum(map(tokens, pair_calls))},
        "completion_tokens_cap_per_call": DEFAULT_MAX_TOKENS,
    }
    total_calls = 2 * result["rubric_one_model"]["calls"] + result["pairwise"]["calls"]
    total_prompt = 2 * result["rubric_one_model"]["prompt_tokens"] + result["pairwise"]["prompt_tokens"]
    result["make_judge"] = {
        "calls": total_calls,
        "prompt_tokens": total_prompt,
        "completion_tokens_at_most": total_calls * DEFAULT_MAX_TOKENS,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r, p, m = result["rubric_one_model"], result["pairwise"], result["make_judge"]
    print(f"stand-in answers: {result['answer_chars_mean']} characters on average")
    print(f"rubric, one model: {r['prompts']} prompts, {r['calls']} calls, {r['prompt_tokens']:,} prompt tokens")
    print(f"pairwise: {p['pairs']} pairs, {p['calls']} calls, {p['prompt_tokens']:,} prompt tokens")
    print(
        f"make judge (rubric on base and tuned, then pairwise): {m['calls']} calls, {m['prompt_tokens']:,} prompt tokens, "
        f"at most {m['completion_tokens_at_most']:,} completion tokens"
    )


if __name__ == "__main__":
    main()
