"""Precision and recall of the quality filters that judge meaning (truncated_answer, ai_self_reference, jailbreak),
on labelled answers from the shared real files.

    python benchmarks/filter_labels.py draw --out items.jsonl    # the turns to label, from ../shared/data
    python benchmarks/filter_labels.py table                     # the table, from tests/data/filter_labels.jsonl

`draw` takes, per file (the ChatMed shard and the general ShareGPT 1K file): every turn each filter rejects (for
precision), and accepted turns in strata enriched for what each filter looks for, plus a random stratum of the
rest (for recall); it records each stratum's size. A person labels each item: for every filter, whether the turn
has what the filter names (cut mid-thought, the answer calls itself an AI, the question is a jailbreak or
unrestricted-persona prompt). `table` runs today's filters over the labelled turns, so a changed filter is measured
against the same labels: precision over the turns it rejects (Wilson 95% interval), recall from the stratified
estimate of positives it lets through (percentile bootstrap over each stratum's labels).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caretune.evaluation.stats import wilson  # noqa: E402
from converters import chatmed, general  # noqa: E402
from converters.choices import AI_SELF_REFERENCE, JAILBREAK, TRUNCATED_ANSWER  # noqa: E402
from converters.quality import FILTERS, strip_think  # noqa: E402

JUDGED = (TRUNCATED_ANSWER, AI_SELF_REFERENCE, JAILBREAK)
LABELS = ROOT / "tests" / "data" / "filter_labels.jsonl"
SHARED = ROOT.parent / "shared" / "data"
FILES = {
    "chatmed": (chatmed, SHARED / "chatmed" / "corpus_92_hpc.jsonl"),
    "general": (general, SHARED / "sharegpt" / "sharegpt_zh_1K_format.jsonl"),
}
SEED = 20261207
STRATUM_SIZE = 50  # labelled accepted turns per enriched stratum and file (all of them when fewer)
RANDOM_SIZE = 50
# What an enriched stratum holds: accepted turns that look like what a filter catches.
ENRICH = {
    TRUNCATED_ANSWER: lambda q, a: a.rstrip()[-1:] not in "。！？!?…~～.”）)】」』》]",
    AI_SELF_REFERENCE: lambda q, a: re.search(r"AI|人工智能|语言模型|OpenAI|ChatGPT|GPT|机器人|助手", a) is not None,
    JAILBREAK: lambda q, a: re.search(r"扮演|角色|忽略|规则|限制|过滤|假装|模拟|游戏|道德|[Ii]gnore|pretend", q) is not None,
}


def _turns(source, path: Path):
    """(line, turn number, question, answer) of every answered turn of every row the source converts."""
    for line_no, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        record = source.convert(json.loads(text))
        if hasattr(record, "reason"):
            continue
        for turn, (question, answer) in enumerate(source.pairs(record), 1):
            yield line_no, turn, question, strip_think(answer)


def _rejected_by(question: str, answer: str) -> list[str]:
    return [name for name in JUDGED if FILTERS[name](question, answer)]


def draw(out: Path) -> None:
    rng = random.Random(SEED)
    items, sizes = [], {}
    for file_name, (source, path) in FILES.items():
        accepted: dict[str, list] = {name: [] for name in (*JUDGED, "random")}
        for line_no, turn, question, answer in _turns(source, path):
            item = {"id": f"{file_name}:{line_no}:{turn}", "file": file_name, "question": question, "answer": answer}
            rejected = _rejected_by(question, answer)
            if rejected:
                items.append({**item, "stratum": "rejected"})
            else:
                stratum = next((name for name in JUDGED if ENRICH[name](question, answer)), "random")
                accepted[stratum].append(item)
        for stratum, pool in accepted.items():
            sizes[f"{file_name}:{stratum}"] = len(pool)
            take = RANDOM_SIZE if stratum == "random" else STRATUM_SIZE
            for item in rng.sample(pool, min(take, len(pool))):
                items.append({**item, "stratum": f"accepted:{stratum}"})
    with out.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"strata_sizes": sizes}, ensure_ascii=False) + "\n")
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{len(items)} items to label -> {out}; strata {sizes}")


def _conversation(item: dict) -> str:
    return item["id"].rsplit(":", 1)[0]


def _turn(item: dict) -> int:
    return int(item["id"].rsplit(":", 1)[1])


def _recall(strata: list[tuple[float, list[tuple[bool, bool]]]], rng: random.Random, draws: int = 2000):
    """Recall and its bootstrap interval from each stratum's weight and labelled (positive, caught) turns."""

    def estimate(samples: list[list[tuple[bool, bool]]]) -> float:
        caught = missed = 0.0
        for (weight, _), outcomes in zip(strata, samples):
            if outcomes:
                caught += weight * sum(p and c for p, c in outcomes) / len(outcomes)
                missed += weight * sum(p and not c for p, c in outcomes) / len(outcomes)
        return caught / (caught + missed) if caught + missed else 1.0

    point = estimate([outcomes for _, outcomes in strata])
    boots = sorted(estimate([rng.choices(o, k=len(o)) if o else [] for _, o in strata]) for _ in range(draws))
    return point, boots[int(0.025 * draws)], boots[int(0.975 * draws) - 1]


def table(labels_path: Path) -> list[dict]:
    """Rows of the precision and recall table, per file and filter, with today's filters over the labelled turns.

    A filter rejects a conversation at the first turn it rejects, as the conversion does, so precision counts that
    turn of each conversation it rejects. Recall is over turns: a positive turn is caught when its conversation is
    rejected (a DAN follow-up inside a rejected DAN conversation is caught). Every turn some filter rejected when the
    sample was drawn is labelled; the accepted turns are estimated per stratum (its size times the shares of its
    labelled turns that are positive and caught, or missed), with a percentile bootstrap over each stratum."""
    lines = labels_path.read_text(encoding="utf-8").splitlines()
    sizes = json.loads(lines[0])["strata_sizes"]
    items = [json.loads(line) for line in lines[1:]]
    rng = random.Random(SEED)
    rows = []
    for file_name in FILES:
        mine = [item for item in items if item["file"] == file_name]
        for name in JUDGED:
            check = FILTERS[name]
            rejected_turns = [item for item in mine if check(item["question"], item["answer"])]
            first: dict[str, dict] = {}
            for item in sorted(rejected_turns, key=_turn):
                first.setdefault(_conversation(item), item)
            hits = sum(item["label"][name] for item in first.values())
            rejected_stratum = [item for item in mine if item["stratum"] == "rejected"]  # every such turn: weight 1 each
            strata = [(len(rejected_stratum), [(item["label"][name], _conversation(item) in first) for item in rejected_stratum])]
            for stratum in (*JUDGED, "random"):
                labelled = [item for item in mine if item["stratum"] == f"accepted:{stratum}"]
                strata.append(
                    (sizes[f"{file_name}:{stratum}"], [(item["label"][name], _conversation(item) in first) for item in labelled])
                )
            low, high = wilson(hits, len(first)) or (0.0, 1.0)
            recall, recall_low, recall_high = _recall(strata, rng)
            rows.append(
                {
                    "file": file_name,
                    "filter": name,
                    "rejected": len(first),
                    "true": hits,
                    "precision": hits / len(first) if first else None,
                    "precision_95": (low, high),
                    "accepted_labelled": sum(len(outcomes) for _, outcomes in strata[1:]),
                    "missed_in_sample": sum(p and not c for _, outcomes in strata for p, c in outcomes),
                    "recall": recall,
                    "recall_95": (recall_low, recall_high),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("draw").add_argument("--out", type=Path, required=True)
    commands.add_parser("table").add_argument("--labels", type=Path, default=LABELS)
    args = parser.parse_args()
    if args.command == "draw":
        draw(args.out)
        return
    columns = ("file", "filter", "rejected", "truly so", "precision (95% CI)", "accepted turns labelled")
    print("| " + " | ".join((*columns, "positives missed (labelled)", "recall (95% CI)")) + " |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | --- |")
    for row in table(args.labels):
        precision = (
            "–"
            if row["precision"] is None
            else f"{row['precision']:.1%} ({row['precision_95'][0]:.1%}–{row['precision_95'][1]:.1%})"
        )
        print(
            f"| {row['file']} | `{row['filter']}` | {row['rejected']} | {row['true']} | {precision} | {row['accepted_labelled']} "
            f"| {row['missed_in_sample']} | {row['recall']:.1%} ({row['recall_95'][0]:.1%}–{row['recall_95'][1]:.1%}) |"
        )


if __name__ == "__main__":
    main()
