"""The edge: stream a raw file through a source's pure functions into train/eval outputs,
a report, a rejects log and the dataset registry."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from types import ModuleType

from caretune.basics.errors import UserError
from caretune.basics.files import exclusive, sweep_temporaries, write_json_atomic
from caretune.basics.pii import mask_quote
from caretune.basics.registry import load_registry, merge_entries, register
from converters.card import EXAMPLE_REASONS, EXAMPLES_PER_REASON, CardCollector
from converters.care import (
    CARE_FLAGS,
    CareFlags,
    apply_care_policy,
)
from converters.choices import JAILBREAK
from converters.jsoncodec import InvalidJson, UnencodableText
from converters.keyset import KeySet
from converters.names import MEDICAL_SYSTEM_PROMPT
from converters.options import HeldOut, Options, RunControls
from converters.outputs import Outputs, Writers, check_paths, prior_query_keys, registry_entries
from converters.quality import THINK_REMOVED, WRAPPER_STRIPPED, first_rejection, jailbreak, strip_think, strip_wrappers
from converters.reader import JSONL, RawFile, parse_jsonl_block
from converters.records import DUPLICATE, EMPTY_AFTER_STRIP, INVALID_JSON, INVALID_UNICODE, Skip, query_key
from converters.report import Conversion, Counts, PriorQueries, Tally, conversion_report, progress_bar
from converters.sources import SOURCES, care_policy
from converters.split import HeldOutSplit
from converters.turns import TOO_LONG, Plan, fits_by_bytes, plan_rows, unfitted_plan

ARRAY_BATCH_ROWS = 2048
PARALLEL_MIN_BYTES = 16 << 20  # inputs smaller than this convert in one process when no --workers is given
MAX_AUTO_WORKERS = 4  # beyond this the main process (dedupe, split, writing) is the bottleneck


_CARE_INDEX = {flags: index for index, flags in enumerate(CARE_FLAGS)}


@dataclass
class Batch:
    """What converting a run of rows produced; picklable so worker processes can return it. Kept rows travel as
    columns (a list per field): pickling them is far cheaper than a tuple a row, and the main process offers
    them to the split and the data card with one threshold comparison a row."""

    read: int = 0
    lines: list[int] = field(default_factory=list)  # kept rows: input line
    elements: list[int] = field(default_factory=list)  # kept rows: element of a JSON array (1-based; 0 in JSON Lines)
    keys: list[int] = field(default_factory=list)  # query key (dedupe, split)
    records: list[bytes] = field(default_factory=list)  # the record as UTF-8 JSON
    cares: bytearray = field(default_factory=bytearray)  # the row's CareFlags as an index into CARE_FLAGS
    chars: list[int] = field(default_factory=list)  # characters of question and answer text (for the data card)
    changes: dict[int, tuple[str, ...]] = field(default_factory=dict)  # kept row index -> changes made, if any
    expanded: dict[int, list[bytes]] = field(default_factory=dict)  # kept row index -> its training rows, when not the row
    plans: list[Plan] = field(default_factory=list)  # how each kept row trains (shared objects: cheap to pickle)
    rejects: list[tuple[int, int, str, str]] = field(default_factory=list)  # (line, element, reason, detail)
    notes: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str, list[tuple[str, str]]]] = field(default_factory=list)  # (line, reason, turns)

    def only(self, rows: list[int]) -> Batch:
        """The kept rows at `rows` (indices, in order), renumbered; everything else as it is."""
        where = {old: new for new, old in enumerate(rows)}
        return Batch(
            read=self.read,
            lines=[self.lines[i] for i in rows],
            elements=[self.elements[i] for i in rows],
            keys=[self.keys[i] for i in rows],
            records=[self.records[i] for i in rows],
            cares=bytearray(self.cares[i] for i in rows),
            chars=[self.chars[i] for i in rows],
            changes={where[i]: kinds for i, kinds in self.changes.items() if i in where},
            expanded={where[i]: rows for i, rows in self.expanded.items() if i in where},
            plans=[self.plans[i] for i in rows],
            rejects=self.rejects,
            notes=self.notes,
            pii=self.pii,
            examples=self.examples,
        )


def _clean(
    source: ModuleType, record: dict, options: Options
) -> tuple[dict, tuple[str, ...], CareFlags, list[tuple[str, str]]] | Skip:
    """Strip prompt wrappers, apply the quality filters and the care policy to one converted record.

    Returns the record, the changes made, its care flags and its final turns; or the Skip."""
    turns = source.pairs(record)
    changes: tuple[str, ...] = ()
    thoughtless = [(question, strip_think(answer)) for question, answer in turns] if _has_think(turns) else turns
    if thoughtless is not turns and thoughtless != turns:
        if not all(answer for _, answer in thoughtless):
            return Skip(EMPTY_AFTER_STRIP, "an answer is only a <think> block")
        turns, changes = thoughtless, (THINK_REMOVED,)
    if options.strip_wrappers:
        stripped = _stripped(turns)
        if stripped is not None:
            if not all(question for question, _ in stripped):
                return Skip(EMPTY_AFTER_STRIP, "the question is only a prompt wrapper")
            turns, changes = stripped, (*changes, WRAPPER_STRIPPED)
    if options.filters:
        own_system = record.get("system")  # a row's own system turn is a prompt too
        if (
            own_system
            and own_system != MEDICAL_SYSTEM_PROMPT
            and JAILBREAK in options.filters
            and (detail := jailbreak(own_system, ""))
        ):
            return Skip(JAILBREAK, f"system prompt: {detail}")
        rejection = first_rejection(turns, options.filters)
        if rejection is not None:
            return Skip(*rejection)
    verdict = apply_care_policy(turns, care_policy(source, options))
    if type(verdict) is Skip:
        return verdict
    turns, added, flags = verdict
    if changes or added:
        record = source.with_pairs(record, turns)
        changes += tuple(added)
    return record, changes, flags, turns


def _has_think(turns: list[tuple[str, str]]) -> bool:
    return any("think>" in answer for _, answer in turns)


def _stripped(turns: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The turns with prompt wrappers stripped from their questions, or None when no question had one."""
    stripped = None
    for index, (question, answer) in enumerate(turns):
        bare = strip_wrappers(question)
        if bare != question:
            stripped = stripped or list(turns)
            stripped[index] = (bare, answer)
    return stripped


def convert_rows(source_name: str, options: Options, rows: Iterable[tuple[int, object]], first_element: int = 0) -> Batch:
    """Run `(line, value)` rows through a source's pure functions and the cleaning steps. Rows of a JSON array are
    numbered from `first_element` (1 for its first element), so every reject names its element; 0: JSON Lines."""
    source = SOURCES[source_name]
    convert, scrub, first_query, pairs, encode = source.convert, source.scrub, source.first_query, source.pairs, source.encode
    policy = options.train_answers or source.TRAIN_ANSWERS
    clean_rejected = getattr(source, "clean_rejected", None)
    batch = Batch()
    rejects = batch.rejects
    quote = mask_quote if options.scrub_pii else str  # details quote row text: masked as the rows are
    examples: Counter = Counter()  # at most EXAMPLES_PER_REASON per batch: the card needs no more

    def example(line_no: int, reason: str, turns: list[tuple[str, str]]) -> None:
        if examples[reason] < EXAMPLES_PER_REASON:
            examples[reason] += 1
            batch.examples.append((line_no, reason, turns))

    for position, (line_no, row) in enumerate(rows):
        element = first_element + position if first_element else 0
        batch.read += 1
        result = Skip(INVALID_JSON, str(row)) if isinstance(row, InvalidJson) else convert(row, options.layout)
        if type(result) is Skip:
            rejects.append((line_no, element, result.reason, quote(result.detail)))
            continue
        notes = result.pop("_notes", ())  # counted once the row is kept
        cleaned = _clean(source, result, options)
        if type(cleaned) is Skip:
            rejects.append((line_no, element, cleaned.reason, quote(cleaned.detail)))
            if cleaned.reason in EXAMPLE_REASONS:
                example(line_no, cleaned.reason, pairs(result))
            continue
        result, changes, care, turns = cleaned
        if clean_rejected is not None:  # a preference pair's rejected answer: filtered for the report, kept
            result, rejected_notes = clean_rejected(result, options.filters)
            notes = (*notes, *rejected_notes)
        if options.scrub_pii:
            result, masked = scrub(result)
            if masked:
                batch.pii.update(masked)
        try:
            encoded = encode(result)  # text JSON cannot hold (a lone surrogate) is refused before any other step
        except UnencodableText as err:
            rejects.append((line_no, element, INVALID_UNICODE, quote(str(err))))
            continue
        key = query_key(first_query(result))
        if options.cutoff_len is None or fits_by_bytes(encoded, len(turns), options.cutoff_len):
            plan = unfitted_plan(len(turns), policy)  # the record's JSON bounds its text: every row fits
        else:
            plan = _fitted_plan(source, result, policy, options)
        if not plan.windows or plan.windows[-1].last != len(turns) - 1:
            rejects.append(
                (line_no, element, TOO_LONG, f"the last answer with its question exceeds --cutoff-len {options.cutoff_len} tokens")
            )
            continue
        encoded, training_rows = _encoded_rows(source, result, key, plan, encoded)
        if changes:
            batch.changes[len(batch.keys)] = changes
            for change in changes:
                example(line_no, change, turns)
        if training_rows is not None:
            batch.expanded[len(batch.keys)] = training_rows
        batch.plans.append(plan)
        batch.notes.update(notes)
        batch.lines.append(line_no)
        batch.elements.append(element)
        batch.keys.append(key)
        batch.records.append(encoded)
        batch.cares.append(_CARE_INDEX[care])
        batch.chars.append(len(turns[0][0]) + len(turns[0][1]) if len(turns) == 1 else sum(len(q) + len(a) for q, a in turns))
    return batch


def _fitted_plan(source: ModuleType, record: dict, policy: str, options: Options) -> Plan:
    """The plan of a row that may not fit the cutoff; a preference pair fits when the prompt fits with either answer
    (the stricter of the two plans)."""
    dialogues = source.fitting_dialogues(record) if hasattr(source, "fitting_dialogues") else [source.dialogue(record)]
    plans = [plan_rows(system, turns, policy, options.cutoff_len, options.count) for system, turns in dialogues]
    return max(plans, key=lambda plan: (not plan.windows, plan.windows[-1].first if plan.windows else 0))


def _encoded_rows(source: ModuleType, record: dict, key: int, plan: Plan, encoded: bytes) -> tuple[bytes, list[bytes] | None]:
    """The conversation's held-out row (its last answer's window) and its training rows, encoded; None for the
    training rows when they are that one row. ShareGPT rows carry the conversation's key; `encoded` is the record's
    encoding, used as it is for an alpaca row (one turn, one row)."""
    if "conversations" not in record:
        return encoded, None
    record = {**record, "conversation": f"{key:016x}"}
    last = plan.windows[-1]
    held_out = source.encode(source.window(record, last.first, last.last))
    if len(plan.windows) == 1:
        return held_out, None
    return held_out, [source.encode(source.window(record, window.first, window.last)) for window in plan.windows]


def convert_jsonl_block(source_name: str, options: Options, path: str, first_line: int, block: bytes) -> Batch:
    """Parse and convert one block of JSON Lines (runs in a worker process for large files)."""
    return convert_rows(source_name, options, parse_jsonl_block(path, first_line, block))


def auto_workers(raw: RawFile) -> int:
    """Worker processes for `raw` when none are asked for: one per usable core (at most MAX_AUTO_WORKERS) for a
    JSON Lines file of PARALLEL_MIN_BYTES or more, else none (starting workers costs more than it saves)."""
    if raw.format != JSONL or raw.size < PARALLEL_MIN_BYTES:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


def _end_with_parent() -> None:
    """In a worker: ask Linux to send it SIGTERM when the conversion that started it dies, even by SIGKILL (else
    a killed conversion leaves its workers waiting forever)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """The processes that convert JSON Lines blocks, started before any thread of this process (the progress bar
    has one): then they can be forked, sharing the loaded modules, instead of started from a fork server."""
    if workers <= 1:
        yield None
        return
    safe_to_fork = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    context = multiprocessing.get_context("fork" if safe_to_fork else "forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_end_with_parent) as pool:
        pool.submit(int).result()  # starts every worker now
        yield pool


def _batches(source: ModuleType, raw: RawFile, options: Options, pool: ProcessPoolExecutor | None, workers: int) -> Iterator[Batch]:
    """Converted batches in input order; with a pool, JSON Lines blocks fan out to its worker processes."""
    if raw.format != JSONL or pool is None:
        rows = iter(raw.rows())
        first_element = 1 if raw.format != JSONL else 0
        while chunk := list(islice(rows, ARRAY_BATCH_ROWS)):
            yield convert_rows(source.NAME, options, chunk, first_element)
            first_element += len(chunk) if first_element else 0
        return
    pending: deque = deque()
    for first_line, block in raw.jsonl_blocks():
        pending.append(pool.submit(convert_jsonl_block, source.NAME, options, raw.path, first_line, block))
        if len(pending) >= 2 * workers:  # bounded: the file is never read far ahead of the writer
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _route(
    batch: Batch,
    tally: Tally,
    seen: KeySet,
    prior: KeySet,
    prior_detail: str,
    split: HeldOutSplit,
    out: Writers,
    card: CardCollector | None,
) -> None:
    """Dedupe a batch's kept rows, offer them to the held-out split, and write what goes to train."""
    tally.read += batch.read
    tally.notes.update(batch.notes)
    tally.pii.update(batch.pii)
    rejects = batch.rejects
    for _, _, reason, _ in rejects:
        tally.skipped[reason] += 1
    batch, duplicate_lines = _drop_duplicates(batch, tally, seen, prior, prior_detail)
    for index, kinds in batch.changes.items():
        for change in kinds:
            tally.changes[change] += 1
            out.changes.append({"line": batch.lines[index], "change": change})
    if card is not None:
        card.offer(batch.lines, batch.keys, batch.records, batch.chars)
    _write_train(_split_off(batch, split), out, tally)
    for line_no, element, reason, detail in sorted(rejects):
        out.rejects.append({"line": line_no, **({"element": element} if element else {}), "reason": reason, "detail": detail})
    if card is not None:  # a change shown on the card must be one that was written
        card.add_examples([example for example in batch.examples if example[0] not in duplicate_lines])


def _drop_duplicates(batch: Batch, tally: Tally, seen: KeySet, prior: KeySet, prior_detail: str) -> tuple[Batch, set[int]]:
    """The batch without rows whose query was seen before (counted, and listed with the rejects); their lines."""
    keys = batch.keys
    earlier = {index for index, key in enumerate(keys) if key in prior} if len(prior) else set()
    if earlier:  # queries of the datasets converted earlier are not added to this file's own
        offered = [index for index in range(len(keys)) if index not in earlier]
        fresh = [offered[position] for position in seen.add_new([keys[index] for index in offered])]
    else:
        fresh = seen.add_new(keys)
    if len(fresh) == len(keys):
        return batch, set()
    duplicates = sorted(set(range(len(keys))).difference(fresh))
    for index in duplicates:
        detail = prior_detail if index in earlier else "query seen earlier in this file"
        batch.rejects.append((batch.lines[index], batch.elements[index], DUPLICATE, detail))
    tally.duplicates += len(duplicates)
    return batch.only(fresh), {batch.lines[index] for index in duplicates}


def _split_off(batch: Batch, split: HeldOutSplit) -> list[tuple[bytes, int, list[bytes] | None, Plan]]:
    """Offer a batch's rows to the held-out split; the rows going to train (record, care index, training rows,
    plan), in the order rows (or the candidates they displace) leave the split. Rows at or above the split's
    threshold cannot become candidates, so only the others are offered one by one."""
    keys = batch.keys
    rows = [(batch.records[i], batch.cares[i], batch.expanded.get(i), batch.plans[i]) for i in range(len(keys))]
    threshold = split.threshold()
    candidates = range(len(keys)) if threshold is None else [i for i, key in enumerate(keys) if key < threshold]
    train = []
    start = 0
    for i in candidates:
        train += rows[start:i]
        displaced = split.offer(keys[i], rows[i])
        if displaced is not None:
            train.append(displaced)
        start = i + 1
    train += rows[start:]
    return train


def _write_train(rows: list[tuple[bytes, int, list[bytes] | None, Plan]], out: Writers, tally: Tally) -> None:
    """Write the training rows of conversations going to train, and count what trains."""
    for record, care, expanded, plan in rows:
        tally.train_care[care] += 1
        tally.plans.append(plan)
        if expanded is None:
            out.train.extend_json((record,))
        else:
            out.train.extend_json(expanded)


def convert_file(
    source: ModuleType,
    raw_path: str | os.PathLike,
    outputs: Outputs,
    held_out: HeldOut,
    *,
    options: Options = Options(),
    registry_path: str | os.PathLike | None = None,
    controls: RunControls = RunControls(),
    card: CardCollector | None = None,
    on_published: Callable[[dict], None] | None = None,
) -> dict:
    """Convert `raw_path` with `source`; write outputs atomically, register them, and return the report.

    The whole conversion holds the output set's lock, so its files (and `on_published(report)`'s, e.g. the
    data card) always come from one run; the registry is updated under its own lock. A second run into
    the same outputs waits (`controls.lock_timeout` seconds at most). Raises `UserError` (unreadable input) or
    `RegistryError`; in each case no output is replaced. `card`, when given, collects what the data card shows.
    """
    check_paths(raw_path, outputs, registry_path)
    entries = None
    if registry_path is not None:
        entries = registry_entries(source, outputs, registry_path, options.layout)
        merge_entries(load_registry(registry_path), entries, registry_path)  # fail before any work
    log = controls.log
    with exclusive(outputs.train, what=f"converting into {outputs.train}", timeout=controls.lock_timeout, log=log):
        removed, size = sweep_temporaries(outputs.all_files())
        if removed and log:
            log(f"removed {removed} temporary file(s) ({size / 1e6:.1f} MB) left by an interrupted run")
        report = _convert_locked(source, raw_path, outputs, held_out, options=options, controls=controls, card=card)
        if on_published:
            on_published(report)
    if registry_path is not None:
        report["registry_changed"] = register(registry_path, entries, lock_timeout=controls.lock_timeout, log=log)
    return report


def _convert_locked(
    source: ModuleType,
    raw_path: str | os.PathLike,
    outputs: Outputs,
    held_out: HeldOut,
    *,
    options: Options,
    controls: RunControls,
    card: CardCollector | None,
) -> dict:
    """The conversion itself, under the output set's lock: read, clean, route, write, report."""
    started = time.perf_counter()
    prior, prior_datasets = prior_query_keys(outputs)
    raw = RawFile(raw_path)
    workers = auto_workers(raw) if controls.workers is None else controls.workers
    split = HeldOutSplit(held_out.size)
    tally = Tally()
    seen = KeySet()
    with _worker_pool(workers) as pool, progress_bar(raw, source, controls.progress), Writers(outputs) as out:
        for batch in _batches(source, raw, options, pool, workers):
            _route(batch, tally, seen, prior, f"query already in {', '.join(prior_datasets)}", split, out, card)
        kept = len(tally.plans) + len(split)
        eval_rows, leftover = split.finish(max_eval=int(kept * held_out.max_fraction))
        _write_train(list(leftover), out, tally)
        if out.train.count + len(eval_rows) == 0:
            reasons = ", ".join(f"{k} {v}" for k, v in tally.skipped.most_common()) or "no rows"
            raise UserError(
                f"{raw_path}: no row could be converted ({reasons}, duplicates {tally.duplicates}); nothing was written"
            )
        tally.eval_care.update(care for _, care, _, _ in eval_rows)
        out.eval.extend_json([record for record, _, _, _ in eval_rows])
        report = conversion_report(
            Conversion(source, raw, outputs, options, held_out, workers, started),
            tally,
            Counts(conversations=len(tally.plans), train_rows=out.train.count, eval_rows=len(eval_rows)),
            PriorQueries(prior_datasets, len(prior)),
        )
        out.commit()
    write_json_atomic(outputs.report, report)
    return report
