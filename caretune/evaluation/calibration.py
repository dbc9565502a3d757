"""`caretune judge calibrate`: how far the judge agrees with physicians, before its scores are trusted.

A labels file is JSON Lines in either of two formats, told apart line by line:

- HealthBench's published meta-evaluation file, unchanged: one graded criterion a line, with every physician's label
      {"prompt": [{"role": "user", "content": "..."}], "completion": "...", "rubric": "criterion text",
       "category": "...", "binary_labels": [true, false, ...], "anonymized_physician_ids": ["...", ...], ...}
- caretune's own: one criterion a line with one label
      {"prompt": [...], "response": "...", "criterion": "...", "points": 5, "label": true}

The judge grades each criterion with the rubric prompt. Its verdict is compared with each label of the line, as
HealthBench's meta-evaluation compares a grader with physicians (pairwise): agreement is the share of equal pairs,
and macro F1 averages the F1 of "met" and of "not met", where precision counts the pairs in which the judge said that
class and recall the pairs in which the physician did. Where lines carry several physicians, the same figures for
each physician against the others of the line say how far physicians agree among themselves. Lines are also counted
by HealthBench's `category`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.evaluation.grader_prompts import DEFAULT_LANGUAGE
from caretune.evaluation.judge import Judge, write_outputs
from caretune.evaluation.rubric import Criterion, criterion_call, json_lines, parse_messages
from caretune.evaluation.stats import agreement


@dataclass(frozen=True)
class Label:
    messages: tuple[dict, ...]
    response: str
    criterion: Criterion
    labels: tuple[bool, ...]  # one per physician (caretune's format: one)
    category: str | None = None


def _meta_eval_label(row: dict, where: str) -> Label:
    """A line of HealthBench's meta-evaluation file."""
    labels = row.get("binary_labels")
    if not isinstance(row.get("completion"), str) or not isinstance(row.get("rubric"), str):
        raise UserError(f"{where}: `completion` and `rubric` must be text")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, bool) for label in labels):
        raise UserError(f"{where}: `binary_labels` must be a non-empty list of true/false")
    category = row.get("category")
    return Label(
        parse_messages(row.get("prompt"), where),
        row["completion"],
        Criterion(row["rubric"], None, ()),
        tuple(labels),
        category if isinstance(category, str) else None,
    )


def _own_label(row: dict, where: str) -> Label:
    """A line of caretune's labels format."""
    points = row.get("points", 1)
    if not isinstance(row.get("response"), str) or not isinstance(row.get("criterion"), str):
        raise UserError(f"{where}: `response` and `criterion` must be text (or give HealthBench's meta-evaluation keys)")
    if not isinstance(row.get("label"), bool):
        raise UserError(f"{where}: `label` must be true (criterion met) or false")
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
        raise UserError(f"{where}: `points` must be a number")
    return Label(
        parse_messages(row.get("prompt"), where), row["response"], Criterion(row["criterion"], float(points), ()), (row["label"],)
    )


def load_labels(path: str | Path) -> list[Label]:
    """Every labelled criterion, validated before any call is made."""
    labels = []
    for number, row in json_lines(Path(path)):
        where = f"{path}:{number}"
        labels.append(_meta_eval_label(row, where) if "binary_labels" in row else _own_label(row, where))
    if not labels:
        raise UserError(f"{path}: no labels")
    return labels


def judge_pairs(labels: list[Label], verdicts: list[bool | None]) -> tuple[list[bool], list[bool]]:
    """(physician label, judge verdict) for every label of every line the judge answered."""
    pairs = [(label, verdict) for line, verdict in zip(labels, verdicts) if verdict is not None for label in line.labels]
    return [t for t, _ in pairs], [j for _, j in pairs]


def physician_pairs(labels: list[Label]) -> tuple[list[bool], list[bool]]:
    """(another physician's label, one physician's label) for every ordered pair of physicians on a line."""
    truth, judged = [], []
    for line in labels:
        for i, own in enumerate(line.labels):
            for j, other in enumerate(line.labels):
                if i != j:
                    truth.append(other)
                    judged.append(own)
    return truth, judged


def run_calibration(labels: list[Label], source: str, judge: Judge, out: Path, language: str = DEFAULT_LANGUAGE) -> dict:
    """Judge every labelled criterion and compare; writes judge.json and verdicts.jsonl into `out`."""
    calls = [criterion_call(label.messages, label.response, label.criterion, language) for label in labels]
    verdicts = judge.verdicts(calls, "calibrate")
    rows = [verdicts[call.key(judge.endpoint.model)] for call in calls]
    met = [row["criteria_met"] for row in rows]  # None when unparsed or failed
    by_category = defaultdict(list)
    for line, verdict in zip(labels, met):
        by_category[line.category or "uncategorised"].append((line, verdict))
    physicians = physician_pairs(labels)
    report = {
        "mode": "calibrate",
        "labels": source,
        "lines": len(labels),
        "grader_language": language,
        **agreement(*judge_pairs(labels, met)),
        "physicians_among_themselves": agreement(*physicians) if physicians[0] else None,
        "by_category": {
            name: agreement(*judge_pairs([line for line, _ in group], [v for _, v in group]))
            for name, group in sorted(by_category.items())
        },
        **judge.summary(),
    }
    verdict_rows = [
        {
            "line": index,
            "labels": list(label.labels),
            "criteria_met": row["criteria_met"],
            "unparsed": row["unparsed"],
            "failed": row.get("failed"),
            "why": row.get("why"),
            "explanation": row.get("explanation"),
            "cached": row["cached"],
        }
        for index, (label, row) in enumerate(zip(labels, rows), start=1)
    ]
    write_outputs(out, report, verdict_rows)
    return report
