"""`caretune judge calibrate`: how far the judge agrees with people, before its scores are trusted.

A labels file is JSON Lines, one judged criterion a line, as a clinician graded it:

    {"prompt": [{"role": "user", "content": "..."}], "response": "...", "criterion": "...", "points": 5,
     "label": true}

The judge grades the same criterion with the rubric prompt; agreement is the share of equal verdicts, and
macro F1 averages the F1 of "met" and of "not met", as HealthBench's meta-evaluation reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from caretune.evaluation.judge import Judge, write_outputs
from caretune.evaluation.rubric import Criterion, RubricError, criterion_call, json_lines, parse_messages


@dataclass(frozen=True)
class Label:
    messages: tuple[dict, ...]
    response: str
    criterion: Criterion
    label: bool


def load_labels(path: str | Path) -> list[Label]:
    """Every labelled criterion, validated before any call is made."""
    labels = []
    for number, row in json_lines(Path(path)):
        where = f"{path}:{number}"
        points = row.get("points", 1)
        if not isinstance(row.get("response"), str) or not isinstance(row.get("criterion"), str):
            raise RubricError(f"{where}: `response` and `criterion` must be text")
        if not isinstance(row.get("label"), bool):
            raise RubricError(f"{where}: `label` must be true (criterion met) or false")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
            raise RubricError(f"{where}: `points` must be a number")
        criterion = Criterion(row["criterion"], float(points), ())
        labels.append(Label(parse_messages(row.get("prompt"), where), row["response"], criterion, row["label"]))
    if not labels:
        raise RubricError(f"{path}: no labels")
    return labels


def f1(truth: list[bool], judged: list[bool], positive: bool) -> float:
    """F1 of one class."""
    hits = sum(t == positive and j == positive for t, j in zip(truth, judged))
    predicted = sum(j == positive for j in judged)
    actual = sum(t == positive for t in truth)
    return 2 * hits / (predicted + actual) if predicted + actual else 1.0


def agreement(truth: list[bool], judged: list[bool]) -> dict:
    """Agreement, macro F1 and the confusion counts of the judge against the labels."""
    n = len(truth)
    return {
        "n": n,
        "agreement": round(sum(t == j for t, j in zip(truth, judged)) / n, 4) if n else None,
        "macro_f1": round((f1(truth, judged, True) + f1(truth, judged, False)) / 2, 4) if n else None,
        "confusion": {
            "both_met": sum(t and j for t, j in zip(truth, judged)),
            "both_not_met": sum(not t and not j for t, j in zip(truth, judged)),
            "judge_only_met": sum(j and not t for t, j in zip(truth, judged)),
            "label_only_met": sum(t and not j for t, j in zip(truth, judged)),
        },
    }


def run_calibration(labels: list[Label], source: str, judge: Judge, out: Path) -> dict:
    """Judge every labelled criterion and compare; writes judge.json and verdicts.jsonl into `out`."""
    calls = [criterion_call(label.messages, label.response, label.criterion) for label in labels]
    verdicts = judge.verdicts(calls, "calibrate")
    rows = [verdicts[call.key(judge.endpoint.model)] for call in calls]
    parsed = [(label.label, row["criteria_met"]) for label, row in zip(labels, rows) if not row["unparsed"]]
    report = {
        "mode": "calibrate",
        "labels": source,
        **agreement([t for t, _ in parsed], [j for _, j in parsed]),
        **judge.summary(),
    }
    verdict_rows = [
        {
            "line": index,
            "label": label.label,
            "criteria_met": row["criteria_met"],
            "unparsed": row["unparsed"],
            "explanation": row.get("explanation"),
            "cached": row["cached"],
        }
        for index, (label, row) in enumerate(zip(labels, rows), start=1)
    ]
    write_outputs(out, report, verdict_rows)
    return report
