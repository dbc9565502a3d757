"""`caretune check`: load registered datasets exactly as LLaMA-Factory's SFT training does,
and report rows, rows it would drop, token lengths and rows over the cutoff."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from caretune.constants import BASE_MODEL, TEMPLATE

UNBOUNDED_CUTOFF = 1 << 30  # preprocess untruncated, then compare lengths with the real cutoff


class CheckError(Exception):
    """The check cannot start (registry unreadable, tokenizer unavailable)."""


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


def length_stats(lengths: list[int], cutoff_len: int) -> dict:
    """Token-length summary of one dataset."""
    ordered = sorted(lengths)
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else 0,
        "mean": round(sum(ordered) / len(ordered), 1) if ordered else 0.0,
        "over_cutoff": sum(1 for n in ordered if n > cutoff_len),
    }


def local_dataset_names(registry: dict) -> list[str]:
    """Registry entries that LLaMA-Factory reads from local files."""
    return [name for name, entry in registry.items() if isinstance(entry, dict) and "file_name" in entry]


@contextlib.contextmanager
def _quiet_llamafactory():
    """LLaMA-Factory reads its log level when first imported: warnings only, without leaking the setting."""
    previous = os.environ.get("LLAMAFACTORY_VERBOSITY")
    os.environ["LLAMAFACTORY_VERBOSITY"] = previous or "WARN"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["LLAMAFACTORY_VERBOSITY"]


def check_datasets(names: list[str], dataset_info: str, *, model_name_or_path: str | None, template: str = TEMPLATE,
                   cutoff_len: int, sample: int | None = None) -> list[dict]:
    """One result dict per dataset; a dataset that fails carries its error instead of stopping the rest."""
    from converters.registry import RegistryError, load_registry

    try:
        registry = load_registry(dataset_info)
    except RegistryError as err:
        raise CheckError(str(err)) from None
    if not Path(dataset_info).exists():
        raise CheckError(f"{dataset_info}: no registry; convert a dataset first (caretune convert ...)")
    names = names or local_dataset_names(registry)
    if not names:
        raise CheckError(f"{dataset_info}: no local datasets registered; convert a dataset first")

    from caretune.tokenizer import TokenizerError, load_qwen3_tokenizer

    try:
        tokenizer, tokenizer_source = load_qwen3_tokenizer(model_name_or_path)
    except TokenizerError as err:
        raise CheckError(str(err)) from None
    print(f"tokenizer: {tokenizer_source}", file=sys.stderr)

    dataset_dir = str(Path(dataset_info).resolve().parent)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            result = {"dataset": name, "rows": 0, "dropped": 0, "tokens": None, "care": None, "error": None}
            results.append(result)
            if name not in registry:
                result["error"] = f"not registered in {dataset_info}"
                continue
            try:
                data = tokenized_lengths(name, dataset_dir, tokenizer, model_name_or_path or BASE_MODEL, scratch,
                                         template=template, cutoff_len=UNBOUNDED_CUTOFF, max_samples=sample,
                                         with_care=True)
            except Exception as err:  # any load failure is reported per dataset, as LLaMA-Factory would fail
                result["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
                continue
            result["rows"] = data.rows
            result["dropped"] = data.rows - len(data.lengths)
            result["tokens"] = length_stats(data.lengths, cutoff_len)
            result["care"] = data.care
    return results


@contextlib.contextmanager
def _unfingerprinted():
    """`datasets` hashes every map's tokenizer to name cache files (seconds for Qwen3's vocabulary each time);
    these scratch loads never reuse a cache, so random names do."""
    from datasets import arrow_dataset, fingerprint

    def random_fingerprint(*_args, **_kwargs) -> str:
        return fingerprint.generate_random_fingerprint()

    saved = fingerprint.update_fingerprint, arrow_dataset.update_fingerprint
    fingerprint.update_fingerprint = arrow_dataset.update_fingerprint = random_fingerprint
    try:
        yield
    finally:
        fingerprint.update_fingerprint, arrow_dataset.update_fingerprint = saved


@dataclass(frozen=True)
class TokenizedDataset:
    rows: int  # rows in the dataset (or its first `max_samples`)
    tokenized: int  # rows put through preprocessing (all, or the sample)
    lengths: list[int]  # token length of each tokenized row preprocessing kept, in dataset order
    care: dict | None  # the care rules over the rows (converters.care.CareTally.as_dict), when asked for


def care_stats(aligned) -> dict:
    """Shares of rows whose answers advise care, and of urgent questions answered with emergency care."""
    from converters.care import CareTally, apply_care_policy
    from converters.choices import OFF

    tally = CareTally()
    for prompt, response in zip(aligned["_prompt"], aligned["_response"]):
        messages = [*prompt, *response[:1]]
        turns = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]
        if turns:
            _, _, flags = apply_care_policy(turns, OFF)
            tally.add(flags)
    return tally.as_dict()


def tokenized_lengths(name: str, dataset_dir: str, tokenizer, model_name_or_path: str, scratch: str, *, template: str,
                      cutoff_len: int, max_samples: int | None = None, sample: int | None = None, seed: int = 0,
                      num_proc: int | None = None, with_care: bool = False) -> TokenizedDataset:
    """One registered dataset through LLaMA-Factory's SFT preprocessing (unpacked), as training sees it.

    `max_samples` reads only the first rows (as LLaMA-Factory does); `sample` tokenizes a seeded random
    sample of them while still counting every row. `with_care` also runs the care rules over every row.
    """
    with _quiet_llamafactory():
        from llamafactory.data.loader import _get_preprocessed_dataset
        from llamafactory.data.template import get_template_and_fix_tokenizer

        from caretune.lf import load_aligned

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), _unfingerprinted():  # LF prints a row
        aligned, data_args, training_args = load_aligned(
            name, dataset_dir, model_name_or_path, scratch, template=template, cutoff_len=cutoff_len,
            max_samples=max_samples, overwrite_cache=True, preprocessing_num_workers=num_proc)
        rows = len(aligned)
        care = care_stats(aligned) if with_care else None
        if sample is not None and sample < rows:
            aligned = aligned.shuffle(seed=seed).select(range(sample))
        chat_template = get_template_and_fix_tokenizer(tokenizer, data_args)
        processed = _get_preprocessed_dataset(aligned, data_args, training_args, "sft", chat_template, tokenizer)
    return TokenizedDataset(rows=rows, tokenized=len(aligned), lengths=[len(ids) for ids in processed["input_ids"]],
                            care=care)


def format_results(results: list[dict], cutoff_len: int) -> str:
    """A table a person reads: token lengths, then the care rules (share advising care; urgent questions
    answered with emergency care)."""
    header = (f"{'dataset':<18} {'rows':>8} {'dropped':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} "
              f"{'>' + str(cutoff_len):>8} {'care':>7} {'urgent':>12}")
    lines = [header, "-" * len(header)]
    for r in results:
        if r["error"]:
            lines.append(f"{r['dataset']:<18} ERROR {r['error']}")
            continue
        t, c = r["tokens"], r["care"]
        urgent = f"{c['urges_emergency']}/{c['urgent_questions']}" if c["urgent_questions"] else "-"
        lines.append(f"{r['dataset']:<18} {r['rows']:>8} {r['dropped']:>8} {t['p50']:>6} {t['p90']:>6} "
                     f"{t['p99']:>6} {t['max']:>6} {t['over_cutoff']:>8} {c['advises_care_share']:>7.1%} {urgent:>12}")
    lines.append("care: rows whose answers advise seeing a doctor; urgent: answers urging emergency care / "
                 "questions the emergency rule flags (converters/care.py)")
    return "\n".join(lines)
