"""`caretune check`: load registered datasets exactly as LLaMA-Factory's SFT training does,
and report rows, rows it would drop, token lengths and rows over the cutoff."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.constants import TEMPLATE
from caretune.prep.lengths import percentile

UNBOUNDED_CUTOFF = 1 << 30  # lengths untruncated, then compared with the real cutoff


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


def check_datasets(
    names: list[str],
    dataset_info: str,
    *,
    model_name_or_path: str | None,
    template: str = TEMPLATE,
    cutoff_len: int,
    sample: int | None = None,
    use_cache: bool = True,
) -> list[dict]:
    """One result dict per dataset; a dataset that fails carries its error instead of stopping the rest.
    Token lengths come from `caretune.prep.lengths` (cached unless `use_cache` is off or only a sample is read)."""
    from caretune.basics.registry import RegistryError, load_registry

    try:
        registry = load_registry(dataset_info)
    except RegistryError as err:
        raise UserError(str(err)) from None
    if not Path(dataset_info).exists():
        raise UserError(f"{dataset_info}: no registry; convert a dataset first (caretune convert ...)")
    if not names:  # every registered local dataset that has been built (prefs-onpolicy waits for prefs build)
        folder = Path(dataset_info).resolve().parent
        names = [n for n in local_dataset_names(registry) if (folder / str(registry[n]["file_name"])).exists()]
        for name in sorted(set(local_dataset_names(registry)) - set(names)):
            print(f"check: {name}: {registry[name]['file_name']} is not built yet; skipped", file=sys.stderr)
    if not names:
        raise UserError(f"{dataset_info}: no local datasets registered and built; convert a dataset first")

    from caretune.prep.lengths import LengthRequest, TokenizerSource, dataset_bytes, tokenizer_processes, turn_lengths
    from caretune.prep.tokenizer import TokenizerError

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    tokenizer = TokenizerSource(model_name_or_path, log=log)
    dataset_dir = str(Path(dataset_info).resolve().parent)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            result = {"dataset": name, "rows": 0, "dropped": 0, "tokens": None, "care": None, "fitting": None, "error": None}
            results.append(result)
            if name not in registry:
                result["error"] = f"not registered in {dataset_info}"
                continue
            try:
                processes = tokenizer_processes(os.cpu_count(), dataset_bytes(dataset_dir, name))
                request = LengthRequest(template, max_samples=sample, num_proc=processes, with_care=True, use_cache=use_cache)
                data = turn_lengths(name, dataset_dir, tokenizer, scratch, request, log=log)
            except TokenizerError as err:
                raise UserError(str(err)) from None
            except Exception as err:  # any load failure is reported per dataset, as LLaMA-Factory would fail
                result["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
                continue
            lengths = data.lengths(UNBOUNDED_CUTOFF)
            result["rows"] = data.rows
            result["dropped"] = data.rows - len(lengths)
            result["tokens"] = length_stats(lengths, cutoff_len)
            result["care"] = data.care
            result["fitting"] = fitting(dataset_dir, name)
    return results


def fitting(dataset_dir: str, name: str) -> dict | None:
    """What the dataset's conversion did to fit its rows (converters/turns.py), from its report; None without one."""
    from caretune.prep.mixing import conversion_report

    training = (conversion_report(dataset_dir, name) or {}).get("training")
    if not isinstance(training, dict):
        return None
    keys = ("cutoff_len", "rows", "answers", "trained_answers", "fitted_rows", "turns_dropped", "answers_too_long")
    return {key: training.get(key) for key in keys}


def format_results(results: list[dict], cutoff_len: int) -> str:
    """A table a person reads: token lengths, then the care rules (share advising care, with and without the
    appended reminders; urgent questions answered with emergency care)."""
    header = (
        f"{'dataset':<18} {'rows':>8} {'dropped':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} "
        f"{'>' + str(cutoff_len):>8} {'care':>7} {'own care':>9} {'urgent':>12}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r["error"]:
            lines.append(f"{r['dataset']:<18} ERROR {r['error']}")
            continue
        t, c = r["tokens"], r["care"]
        urgent = f"{c['urges_emergency']}/{c['urgent_questions']}" if c["urgent_questions"] else "-"
        lines.append(
            f"{r['dataset']:<18} {r['rows']:>8} {r['dropped']:>8} {t['p50']:>6} {t['p90']:>6} "
            f"{t['p99']:>6} {t['max']:>6} {t['over_cutoff']:>8} {c['advises_care_share']:>7.1%} "
            f"{c['advises_care_without_reminders_share']:>9.1%} {urgent:>12}"
        )
    for r in results:
        f = r.get("fitting")
        if f and f["cutoff_len"]:
            lines.append(
                f"{r['dataset']}: trains {f['trained_answers']} of {f['answers']} answers; fitted to {f['cutoff_len']} tokens: "
                f"{f['fitted_rows']} rows dropped {f['turns_dropped']} old turns, {f['answers_too_long']} answers too long"
            )
    lines.append(
        "rows: training rows (one per trained answer); care: conversations whose answers advise seeing a doctor; "
        "own care: the same without the reminder sentences a conversion appends (the data's own share); "
        "urgent: answers urging emergency care / questions the emergency rule flags (converters/care.py)"
    )
    return "\n".join(lines)
