"""What a conversion tells: a progress bar over the input's bytes, the report (every row accounted for), its training
summary and its one-line summary."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

from caretune.basics.errors import UserError
from caretune.basics.pii import PII_KINDS
from converters.care import (
    CARE_FLAGS,
    CARE_REMINDER_ADDED,
    EMERGENCY_REMINDER_ADDED,
    CareTally,
)
from converters.options import HeldOut, Options
from converters.outputs import Outputs
from converters.quality import THINK_REMOVED, WRAPPER_STRIPPED
from converters.reader import RawFile
from converters.sources import care_policy
from converters.turns import Plan

CHANGE_KINDS = (THINK_REMOVED, WRAPPER_STRIPPED, CARE_REMINDER_ADDED, EMERGENCY_REMINDER_ADDED)


@dataclass
class Tally:
    """What the main process counts while rows stream through dedupe and the split."""

    read: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    changes: Counter = field(default_factory=Counter)
    train_care: Counter = field(default_factory=Counter)  # rows by index into CARE_FLAGS
    plans: list[Plan] = field(default_factory=list)  # how each conversation in train trains
    eval_care: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Conversion:
    """One conversion's input, outputs and settings: what its report says besides the counts."""

    source: ModuleType
    raw: RawFile
    outputs: Outputs
    options: Options
    held_out: HeldOut
    workers: int
    started: float  # time.perf_counter() at its start


@dataclass(frozen=True)
class Counts:
    """What a conversion wrote: conversations and rows to train on, rows held out."""

    conversations: int
    train_rows: int
    eval_rows: int


@dataclass(frozen=True)
class PriorQueries:
    """The registered datasets whose queries a conversion kept out, and how many queries they hold."""

    datasets: list[str]
    count: int


def conversion_report(run: Conversion, tally: Tally, counts: Counts, prior: PriorQueries) -> dict:
    """The report of one conversion; raises UserError if a row went unaccounted for."""
    source, raw, outputs, options = run.source, run.raw, run.outputs, run.options
    written, held_out = counts.conversations, counts.eval_rows
    skipped = sum(tally.skipped.values())
    if tally.read != written + held_out + tally.duplicates + skipped:
        raise UserError(
            f"{raw.path}: internal error: read {tally.read} != train {written} + eval {held_out} "
            f"+ duplicates {tally.duplicates} + skipped {skipped}; nothing was written"
        )
    return {
        "source": source.NAME,
        "dataset": outputs.name,
        "eval_dataset": outputs.eval_name,
        "read": tally.read,
        "written": written,
        "eval": held_out,
        "duplicates": tally.duplicates,
        "skipped": dict(sorted(tally.skipped.items())),
        "notes": dict(sorted(tally.notes.items())),
        "changes": {kind: tally.changes[kind] for kind in CHANGE_KINDS},
        "training": _training_summary(
            tally.plans, counts.train_rows, options.train_answers or source.TRAIN_ANSWERS, options.cutoff_len
        ),
        "care": {"train": _care_tally(tally.train_care).as_dict(), "eval": _care_tally(tally.eval_care).as_dict()},
        "pii_masked": {kind: tally.pii[kind] for kind in PII_KINDS} if options.scrub_pii else None,
        "settings": {
            "layout": options.layout,
            "filters": sorted(options.filters),
            "strip_wrappers": options.strip_wrappers,
            "care_reminder": care_policy(source, options),
        },
        "prior_queries": {"datasets": prior.datasets, "count": prior.count},
        "eval_size": run.held_out.as_report(),
        "input": {"path": os.fspath(raw.path), "format": raw.format, "bytes": raw.size, "sha256": raw.sha256.hexdigest()},
        "outputs": {
            "train": os.fspath(outputs.train),
            "eval": os.fspath(outputs.eval),
            "rejects": os.fspath(outputs.rejects),
            "changes": os.fspath(outputs.changes),
        },
        "workers": run.workers,
        "seconds": round(time.perf_counter() - run.started, 3),
    }


def _training_summary(plans: list[Plan], rows: int, policy: str, cutoff_len: int | None) -> dict:
    """What trains, over the conversations in train: rows written, answers, answers trained, and what the policy and
    the cutoff left untrained."""
    answers = sum(plan.answers for plan in plans)
    trained = sum(len(plan.windows) for plan in plans)
    too_long = sum(plan.too_long for plan in plans)
    return {
        "policy": policy,
        "rows": rows,
        "conversations": len(plans),
        "answers": answers,
        "trained_answers": trained,
        "trained_share": round(trained / answers, 4) if answers else 0.0,
        "context_only_answers": sum(plan.context_only for plan in plans),
        "cutoff_len": cutoff_len,
        "answers_too_long": too_long,
        "fitted_rows": sum(plan.fitted_rows for plan in plans),
        "turns_dropped": sum(plan.turns_dropped for plan in plans),
    }


def summary_line(report: dict) -> str:
    """The one-line stdout summary of a conversion."""
    skipped = sum(report["skipped"].values())
    reasons = ", ".join(f"{k} {v}" for k, v in report["skipped"].items())
    pii = report["pii_masked"]
    pii_text = f", pii masked {sum(pii.values())}" if pii else ""
    changes = ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in report["changes"].items() if n)
    care = report["care"]["train"]
    training = report["training"]
    trains = f"; {training['rows']} training rows train {training['trained_answers']} of {training['answers']} answers" + (
        f" (fitted to {training['cutoff_len']} tokens: {training['fitted_rows']} rows dropped old turns)"
        if training["cutoff_len"]
        else ""
    )
    return (
        f"{report['source']}: read {report['read']} = train {report['written']} + eval {report['eval']}"
        f" + duplicates {report['duplicates']} + skipped {skipped}"
        + (f" ({reasons})" if reasons else "")
        + pii_text
        + (f"; {changes}" if changes else "")
        + trains
        + f"; train advises care {care['advises_care_share']:.1%}"
        + f" -> {report['outputs']['train']}, {report['outputs']['eval']}"
    )


def _care_tally(counts: Counter) -> CareTally:
    tally = CareTally()
    for index, rows in sorted(counts.items()):
        tally.add(CARE_FLAGS[index], rows)
    return tally


@contextlib.contextmanager
def progress_bar(raw: RawFile, source: ModuleType, progress: bool | None) -> Iterator[None]:
    """A bar on stderr over the input's bytes (default: when stderr is a terminal), closed however the run ends."""
    from tqdm import tqdm

    bar = tqdm(
        total=raw.size,
        unit="B",
        unit_scale=True,
        desc=f"convert {source.NAME}",
        disable=(not progress) if progress is not None else None,
        file=sys.stderr,
        leave=False,
    )
    raw.on_bytes = bar.update
    try:
        yield
    finally:
        bar.close()
