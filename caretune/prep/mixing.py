"""What a recipe's datasets hold, from their conversion reports: training rows (one per trained answer, the unit
LLaMA-Factory's interleave_probs weigh), the mix shares they imply, and the cutoff their rows were fitted to.

Used by `recipes new --general-share` (the shares) and preflight (a mix gone stale, rows LLaMA-Factory would cut)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from caretune.basics.registry import RegistryError, load_registry
from caretune.constants import DATASET_INFO
from converters.outputs import REPORT_SUFFIX

STALE_SHARE = 0.005  # an interleave_prob this far from what the datasets' rows give is stale


def conversion_report(dataset_dir: str | Path, name: str) -> dict | None:
    """The conversion report of a registered local dataset, train or held-out file (the report sits beside them under
    the train file's name), or None when there is none."""
    try:
        entry = load_registry(Path(dataset_dir) / DATASET_INFO).get(name)
    except RegistryError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        return None
    data_file = Path(dataset_dir) / entry["file_name"]
    own = data_file.with_name(data_file.stem + REPORT_SUFFIX)
    for candidate in [own] if own.is_file() else sorted(data_file.parent.glob(f"*{REPORT_SUFFIX}")):
        try:
            report = json.loads(candidate.read_text(encoding="utf-8"))
            outputs = {Path(report["outputs"]["train"]).name, Path(report["outputs"]["eval"]).name}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if data_file.name in outputs:
            return report
    return None


def training_rows(report: dict) -> int:
    """Rows the dataset's train file holds (one per trained answer); a report from before turn expansion: its rows."""
    training = report.get("training")
    return int(training["rows"]) if isinstance(training, dict) and "rows" in training else int(report["written"])


def mix_shares(rows: list[int], general_share: float) -> tuple[float, ...]:
    """interleave_probs: the medical sets' shares in proportion to their training rows (6 decimals, the last one taking
    the rounding), then the general share; they sum to 1 to the last bit numpy checks (LLaMA-Factory refuses otherwise)."""
    general = Decimal(str(general_share))
    medical = [Decimal(str(round(float(1 - general) * n / sum(rows), 6))) for n in rows[:-1]]
    medical.append(1 - general - sum(medical))
    return tuple(float(share) for share in (*medical, general))


def stale_mix(dataset_dir: str | Path, names: list[str], probs: tuple[float, ...]) -> str | None:
    """Why `probs` (a recipe's interleave_probs over `names`, the general set last) no longer match the datasets'
    training rows, or None when they do or the rows are unknown (a dataset without a report)."""
    general = conversion_report(dataset_dir, names[-1]) if names else None
    if len(names) < 2 or general is None or general.get("source") != "general":
        return None  # the shares are the generator's only with the general set last
    reports = [conversion_report(dataset_dir, name) for name in names[:-1]]
    if any(report is None for report in reports):
        return None
    rows = [training_rows(report) for report in reports]
    expected = mix_shares(rows, probs[-1])
    if all(abs(a - b) <= STALE_SHARE for a, b in zip(expected, probs)):
        return None
    listed = ", ".join(f"{name} {share:.4f} (rows give {want:.4f})" for name, share, want in zip(names, probs, expected))
    return (
        f"interleave_probs no longer match the datasets' training rows: {listed}; "
        "regenerate the recipe (caretune recipes new ... --general-share) or set interleave_probs by hand"
    )


def fitted_within(dataset_dir: str | Path, name: str, cutoff_len: int) -> bool:
    """Whether a caretune conversion fitted the dataset's rows to at most `cutoff_len` tokens (its report says so)."""
    report = conversion_report(dataset_dir, name)
    training = report.get("training") if report else None
    fitted = training.get("cutoff_len") if isinstance(training, dict) else None
    return fitted is not None and fitted <= cutoff_len
