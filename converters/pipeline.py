"""The edge: stream a raw file through a source's pure functions into train/eval outputs,
a report, a rejects log and the dataset registry."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import ModuleType

from converters import chatmed, huatuo
from converters.jsoncodec import InvalidJson, UnencodableText, dumps_bytes
from converters.pii import PII_KINDS
from converters.reader import JSONL, RawFile, parse_jsonl_block
from converters.records import DUPLICATE, INVALID_JSON, INVALID_UNICODE, Skip, query_key
from converters.registry import load_registry, merge_entries, register, relative_file_name
from converters.split import HeldOutSplit
from converters.writer import JsonArrayWriter, JsonLinesWriter, write_json_atomic

SOURCES: dict[str, ModuleType] = {chatmed.NAME: chatmed, huatuo.NAME: huatuo}
REPORT_SUFFIX = ".report.json"
REJECTS_SUFFIX = ".rejects.jsonl"
ARRAY_BATCH_ROWS = 2048


class ConversionError(Exception):
    """The conversion cannot produce outputs; nothing was written."""


@dataclass(frozen=True)
class Outputs:
    """Where one conversion writes, and the dataset names it registers."""

    name: str
    eval_name: str
    train: Path
    eval: Path
    report: Path
    rejects: Path

    @classmethod
    def for_source(cls, source: ModuleType, out: str | os.PathLike | None, data_dir: str | os.PathLike) -> Outputs:
        train = Path(out) if out is not None else Path(data_dir) / f"{source.DATASET}.json"
        name = train.stem
        eval_name = source.EVAL_DATASET if name == source.DATASET else f"{name}-eval"
        return cls(
            name=name,
            eval_name=eval_name,
            train=train,
            eval=train.with_name(f"{eval_name}{train.suffix or '.json'}"),
            report=train.with_name(name + REPORT_SUFFIX),
            rejects=train.with_name(name + REJECTS_SUFFIX),
        )


def registry_entries(source: ModuleType, outputs: Outputs, registry_path: str | os.PathLike) -> dict[str, dict]:
    """The dataset_info.json entries for a conversion's train and eval files."""
    return {
        name: {"file_name": relative_file_name(path, registry_path), **source.REGISTRY_ENTRY}
        for name, path in ((outputs.name, outputs.train), (outputs.eval_name, outputs.eval))
    }


def prior_query_keys(outputs: Outputs) -> tuple[set[int], list[str]]:
    """Query keys of the datasets converted earlier into the same folder (other than this one)."""
    keys: set[int] = set()
    datasets = []
    for report_path in sorted(outputs.train.parent.glob(f"*{REPORT_SUFFIX}")):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            dataset, source = report["dataset"], SOURCES[report["source"]]
            files = [Path(report["outputs"]["train"]), Path(report["outputs"]["eval"])]
        except (ValueError, KeyError, TypeError):
            print(f"warning: {report_path}: not a caretune report, ignored for dedupe", file=sys.stderr)
            continue
        if dataset == outputs.name:
            continue
        for data_file in files:
            if data_file.exists():
                for _, record in RawFile(data_file).rows():
                    keys.add(query_key(source.first_query(record)))
        datasets.append(dataset)
    return keys, datasets


@dataclass
class Batch:
    """What converting a run of rows produced; small and picklable so worker processes can return it."""

    read: int = 0
    kept: list[tuple[int, int, bytes]] = field(default_factory=list)  # (line, query key, record as UTF-8 JSON)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, detail)
    notes: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)


def convert_rows(source_name: str, scrub_pii: bool, rows: Iterable[tuple[int, object]]) -> Batch:
    """Run `(line, value)` rows through a source's pure functions."""
    source = SOURCES[source_name]
    convert, scrub, first_query = source.convert, source.scrub, source.first_query
    batch = Batch()
    kept, rejects = batch.kept, batch.rejects
    for line_no, row in rows:
        batch.read += 1
        result = Skip(INVALID_JSON, str(row)) if isinstance(row, InvalidJson) else convert(row)
        if type(result) is Skip:
            rejects.append((line_no, result.reason, result.detail))
            continue
        if "_trimmed" in result:
            batch.notes[result.pop("_trimmed")] += 1
        if scrub_pii:
            result, masked = scrub(result)
            if masked:
                batch.pii.update(masked)
        try:
            encoded = dumps_bytes(result)
        except UnencodableText as err:
            rejects.append((line_no, INVALID_UNICODE, str(err)))
            continue
        kept.append((line_no, query_key(first_query(result)), encoded))
    return batch


def convert_jsonl_block(source_name: str, scrub_pii: bool, path: str, first_line: int, block: bytes) -> Batch:
    """Parse and convert one block of JSON Lines (runs in a worker process for large files)."""
    return convert_rows(source_name, scrub_pii, parse_jsonl_block(path, first_line, block))


def _batches(source: ModuleType, raw: RawFile, scrub_pii: bool, workers: int) -> Iterator[Batch]:
    """Converted batches in input order; with workers > 1, JSON Lines blocks fan out to worker processes."""
    if raw.format != JSONL or workers <= 1:
        rows = iter(raw.rows())
        while chunk := list(islice(rows, ARRAY_BATCH_ROWS)):
            yield convert_rows(source.NAME, scrub_pii, chunk)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque = deque()
        for first_line, block in raw.jsonl_blocks():
            pending.append(pool.submit(convert_jsonl_block, source.NAME, scrub_pii, raw.path, first_line, block))
            if len(pending) >= 2 * workers:  # bounded: the file is never read far ahead of the writer
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def convert_file(
    source: ModuleType,
    raw_path: str | os.PathLike,
    outputs: Outputs,
    *,
    eval_size: int,
    max_eval_fraction: float,
    scrub_pii: bool = True,
    registry_path: str | os.PathLike | None = None,
    progress: bool | None = None,
    workers: int = 1,
) -> dict:
    """Convert `raw_path` with `source`; write outputs atomically, register them, and return the report.

    Raises `InputError` (unreadable input), `RegistryError` or `ConversionError`; in each case no
    output is replaced.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    entries = None
    if registry_path is not None:
        entries = registry_entries(source, outputs, registry_path)
        merge_entries(load_registry(registry_path), entries, registry_path)  # fail before any work

    prior, prior_datasets = prior_query_keys(outputs)
    prior_detail = f"query already in {', '.join(prior_datasets)}"
    seen: set[int] = set()
    bar = tqdm(total=os.path.getsize(raw_path), unit="B", unit_scale=True, desc=f"convert {source.NAME}",
               disable=(not progress) if progress is not None else None, file=sys.stderr, leave=False)
    raw = RawFile(raw_path, on_bytes=bar.update)
    split = HeldOutSplit(eval_size)
    read = duplicates = 0
    skipped: Counter = Counter()
    notes: Counter = Counter()
    pii: Counter = Counter()

    train_out = JsonArrayWriter(outputs.train)
    rejects_out = JsonLinesWriter(outputs.rejects)
    try:
        with train_out, rejects_out:
            for batch in _batches(source, raw, scrub_pii, workers):
                read += batch.read
                notes.update(batch.notes)
                pii.update(batch.pii)
                rejects = batch.rejects
                for _, reason, _ in rejects:
                    skipped[reason] += 1
                to_train = []
                for line_no, key, text in batch.kept:
                    if key in seen or key in prior:
                        duplicates += 1
                        detail = "query seen earlier in this file" if key in seen else prior_detail
                        rejects.append((line_no, DUPLICATE, detail))
                        continue
                    seen.add(key)
                    displaced = split.offer(key, text)
                    if displaced is not None:
                        to_train.append(displaced)
                train_out.extend_json(to_train)
                for line_no, reason, detail in sorted(rejects):
                    rejects_out.append({"line": line_no, "reason": reason, "detail": detail})

            kept = train_out.count + len(split)
            eval_rows, leftover = split.finish(max_eval=int(kept * max_eval_fraction))
            train_out.extend_json(list(leftover))
            if train_out.count + len(eval_rows) == 0:
                reasons = ", ".join(f"{k} {v}" for k, v in skipped.most_common()) or "no rows"
                raise ConversionError(f"{raw_path}: no row could be converted ({reasons}, duplicates {duplicates}); "
                                      "nothing was written")
            with JsonArrayWriter(outputs.eval) as eval_out:
                eval_out.extend_json(eval_rows)
                eval_out.commit()
            train_out.commit()
            rejects_out.commit()
    finally:
        bar.close()

    report = {
        "source": source.NAME,
        "dataset": outputs.name,
        "eval_dataset": outputs.eval_name,
        "read": read,
        "written": train_out.count,
        "eval": len(eval_rows),
        "duplicates": duplicates,
        "skipped": dict(sorted(skipped.items())),
        "notes": dict(sorted(notes.items())),
        "pii_masked": {kind: pii[kind] for kind in PII_KINDS} if scrub_pii else None,
        "prior_queries": {"datasets": prior_datasets, "count": len(prior)},
        "eval_size": {"requested": eval_size, "max_fraction": max_eval_fraction},
        "input": {"path": os.fspath(raw_path), "format": raw.format, "bytes": raw.size,
                  "sha256": raw.sha256.hexdigest()},
        "outputs": {"train": os.fspath(outputs.train), "eval": os.fspath(outputs.eval),
                    "rejects": os.fspath(outputs.rejects)},
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 3),
    }
    assert read == report["written"] + report["eval"] + duplicates + sum(skipped.values()), report
    write_json_atomic(outputs.report, report)
    if registry_path is not None:
        report["registry_changed"] = register(registry_path, entries)
    return report


def summary_line(report: dict) -> str:
    """The one-line stdout summary of a conversion."""
    skipped = sum(report["skipped"].values())
    reasons = ", ".join(f"{k} {v}" for k, v in report["skipped"].items())
    pii = report["pii_masked"]
    pii_text = f", pii masked {sum(pii.values())}" if pii else ""
    return (f"{report['source']}: read {report['read']} = train {report['written']} + eval {report['eval']}"
            f" + duplicates {report['duplicates']} + skipped {skipped}" + (f" ({reasons})" if reasons else "")
            + f"{pii_text} -> {report['outputs']['train']}, {report['outputs']['eval']}")
