"""Where a conversion writes (Outputs), the checks before it writes, the registry entries it makes, what earlier
conversions left (reports, held-out questions), and the atomic writers committed together."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from caretune.basics.errors import UserError
from caretune.basics.registry import RegistryError, load_registry, relative_file_name
from converters.card import CARD_SUFFIX, HISTOGRAM_SUFFIX
from converters.choices import SYSTEM_LAYOUT
from converters.keyset import KeySet
from converters.reader import RawFile
from converters.records import query_key
from converters.sources import SOURCES
from converters.writer import JsonArrayWriter, JsonLinesWriter

REPORT_SUFFIX = ".report.json"
REJECTS_SUFFIX = ".rejects.jsonl"
CHANGES_SUFFIX = ".changes.jsonl"


@dataclass(frozen=True)
class Outputs:
    """Where one conversion writes, and the dataset names it registers."""

    name: str
    eval_name: str
    train: Path
    eval: Path
    report: Path
    rejects: Path
    changes: Path

    @classmethod
    def for_source(cls, source: ModuleType, out: str | os.PathLike | None, data_dir: str | os.PathLike) -> Outputs:
        """The output set of a conversion: `out` (or DATA_DIR/<dataset>.json) and the files beside it."""
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
            changes=train.with_name(name + CHANGES_SUFFIX),
        )

    def all_files(self) -> list[Path]:
        """Every file a conversion writes: outputs, report, lists, and the data card with its histogram."""
        return [
            self.train,
            self.eval,
            self.report,
            self.rejects,
            self.changes,
            self.train.with_name(self.name + CARD_SUFFIX),
            self.train.with_name(self.name + HISTOGRAM_SUFFIX),
        ]


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def check_paths(raw_path: str | os.PathLike, outputs: Outputs, registry_path: str | os.PathLike | None) -> None:
    """Refuse, before a row is read, a conversion that would overwrite its input or the registry, whose
    input is itself an output of an earlier conversion (registered, or listed in a report), or whose outputs
    or registry could not be written (so outputs are never replaced without being registered)."""
    if registry_path is not None and _same(registry_path, raw_path):
        raise UserError(f"{raw_path}: the input is the registry (--dataset-info); convert a raw data file")
    for path, what in ((outputs.train, "--out"), *(((Path(registry_path), "--dataset-info"),) if registry_path else ())):
        folder = next((p for p in Path(path).resolve().parents if p.exists()), Path("/"))
        if (path.exists() and not os.access(path, os.W_OK)) or not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{path}: not writable ({what}); choose a path you can write, or fix its permissions")
    for report_path, report in earlier_reports(Path(raw_path).resolve().parent):
        earlier = (report["outputs"]["train"], report["outputs"]["eval"])
        if any(_same(report_path.parent / Path(path).name, raw_path) for path in earlier):  # outputs sit beside it
            raise UserError(
                f"{raw_path}: the input is an output of an earlier conversion ({report_path.name}); "
                "convert the raw file it came from"
            )
    if registry_path is not None and Path(registry_path).exists():
        try:
            registry = load_registry(registry_path)
        except RegistryError:
            return  # reported, with its line, when the conversion loads it
        root = Path(registry_path).resolve().parent
        for name, entry in registry.items():
            if isinstance(entry, dict) and isinstance(entry.get("file_name"), str) and _same(root / entry["file_name"], raw_path):
                raise UserError(
                    f"{raw_path}: the input is the registered dataset {name!r} ({registry_path}); convert the raw file it came from"
                )
    for path in outputs.all_files():
        if _same(path, raw_path):
            raise UserError(f"{raw_path}: the output {path} would overwrite the input; choose another --out")
        if registry_path is not None and _same(path, registry_path):
            raise UserError(f"{registry_path}: the output {path} would overwrite the registry; choose another --out")


def registry_entries(
    source: ModuleType, outputs: Outputs, registry_path: str | os.PathLike, layout: str = SYSTEM_LAYOUT
) -> dict[str, dict]:
    """The dataset_info.json entries for a conversion's train and eval files."""
    return {
        name: {"file_name": relative_file_name(path, registry_path), **source.registry_entry(layout)}
        for name, path in ((outputs.name, outputs.train), (outputs.eval_name, outputs.eval))
    }


def earlier_reports(folder: Path) -> Iterator[tuple[Path, dict]]:
    """`(path, report)` of the conversions whose reports sit in `folder`, by name; a file that is not one is
    skipped with a warning."""
    for report_path in sorted(folder.glob(f"*{REPORT_SUFFIX}")):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            report["dataset"], SOURCES[report["source"]], report["outputs"]["train"], report["outputs"]["eval"]  # or raise
        except (ValueError, KeyError, TypeError):
            print(f"warning: {report_path}: not a caretune report, ignored", file=sys.stderr)
            continue
        yield report_path, report


def prior_query_keys(outputs: Outputs) -> tuple[KeySet, list[str]]:
    """Query keys of the datasets converted earlier into the same folder (other than this one)."""
    keys = KeySet()
    datasets = []
    for _, report in earlier_reports(outputs.train.parent):
        dataset, source = report["dataset"], SOURCES[report["source"]]
        if dataset == outputs.name:
            continue
        for data_file in (Path(report["outputs"]["train"]), Path(report["outputs"]["eval"])):
            if data_file.exists():
                for _, record in RawFile(data_file).rows():  # a fitted row opens later: its conversation's key counts
                    conversation = record.get("conversation") if isinstance(record, dict) else None
                    keys.add(int(conversation, 16) if isinstance(conversation, str) else query_key(source.first_query(record)))
        datasets.append(dataset)
    return keys, datasets


class Writers:
    """The open atomic writers of one conversion; committed together, or all discarded."""

    def __init__(self, outputs: Outputs):
        self.train = JsonArrayWriter(outputs.train)
        self.rejects = JsonLinesWriter(outputs.rejects)
        self.changes = JsonLinesWriter(outputs.changes)
        self.eval = JsonArrayWriter(outputs.eval)
        self._all = (self.train, self.rejects, self.changes, self.eval)

    def __enter__(self) -> Writers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for writer in self._all:
            writer.__exit__(exc_type, exc, tb)

    def commit(self) -> None:
        for writer in (self.eval, self.train, self.rejects, self.changes):
            writer.commit()
