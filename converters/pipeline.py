"""The edge: stream a raw file through a source's pure functions into train/eval outputs,
a report, a rejects log and the dataset registry."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from converters import chatmed, huatuo
from converters.reader import InvalidJson, RawFile
from converters.records import DUPLICATE, INVALID_JSON, Skip, query_key
from converters.registry import load_registry, merge_entries, register, relative_file_name
from converters.split import HeldOutSplit
from converters.writer import JsonArrayWriter, JsonLinesWriter, write_json_atomic

SOURCES: dict[str, ModuleType] = {chatmed.NAME: chatmed, huatuo.NAME: huatuo}
REPORT_SUFFIX = ".report.json"
REJECTS_SUFFIX = ".rejects.jsonl"


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
            for line_no, row in raw.rows():
                read += 1
                result = source.convert(row) if not isinstance(row, InvalidJson) else Skip(INVALID_JSON, row.message)
                if isinstance(result, Skip):
                    skipped[result.reason] += 1
                    rejects_out.append({"line": line_no, "reason": result.reason, "detail": result.detail})
                    continue
                note = result.pop("_trimmed", None)
                if note:
                    notes[note] += 1
                if scrub_pii:
                    result, masked = source.scrub(result)
                    pii.update(masked)
                key = query_key(source.first_query(result))
                if key in seen or key in prior:
                    duplicates += 1
                    detail = "query seen earlier in this file" if key in seen else prior_detail
                    rejects_out.append({"line": line_no, "reason": DUPLICATE, "detail": detail})
                    continue
                seen.add(key)
                to_train = split.offer(key, result)
                if to_train is not None:
                    train_out.append(to_train)

            kept = train_out.count + len(split)
            eval_rows, leftover = split.finish(max_eval=int(kept * max_eval_fraction))
            for record in leftover:
                train_out.append(record)
            if train_out.count + len(eval_rows) == 0:
                reasons = ", ".join(f"{k} {v}" for k, v in skipped.most_common()) or "no rows"
                raise ConversionError(f"{raw_path}: no row could be converted ({reasons}, duplicates {duplicates}); "
                                      "nothing was written")
            with JsonArrayWriter(outputs.eval) as eval_out:
                for record in eval_rows:
                    eval_out.append(record)
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
        "pii_masked": {kind: pii[kind] for kind in sorted(pii)} if scrub_pii else None,
        "prior_queries": {"datasets": prior_datasets, "count": len(prior)},
        "eval_size": {"requested": eval_size, "max_fraction": max_eval_fraction},
        "input": {"path": os.fspath(raw_path), "format": raw.format, "bytes": raw.size,
                  "sha256": raw.sha256.hexdigest()},
        "outputs": {"train": os.fspath(outputs.train), "eval": os.fspath(outputs.eval),
                    "rejects": os.fspath(outputs.rejects)},
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
