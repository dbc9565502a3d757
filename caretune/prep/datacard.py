"""The data card of one conversion: `<stem>.card.md` and `<stem>.lengths.png` beside its report.

Counts by reason, care-advice shares, a token-length histogram (Qwen3 tokenizer, question and answer text
of a sample of kept rows), the longest and shortest kept rows, and two examples per filter reason or change.
Every text shown goes through the PII masker (and phone numbers and URLs are masked too) and is shortened.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from caretune.basics.files import AtomicFile
from caretune.prep.lengths import percentile
from converters.card import CARD_SUFFIX, HISTOGRAM_SUFFIX, CardCollector
from converters.quality import mask_contacts

SHOWN_CHARS = 160


def _shown(text: str) -> str:
    masked = mask_contacts(text)
    flat = " ".join(masked.split())
    return flat if len(flat) <= SHOWN_CHARS else flat[:SHOWN_CHARS] + "…"


def _turns_line(turns: list[tuple[str, str]]) -> str:
    return " / ".join(f"问：{_shown(question)} 答：{_shown(answer)}" for question, answer in turns)


def _plot(lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(lengths, bins=40, color="#4a7ab5")
    ax.set_xlabel("tokens (question + answer, Qwen3 tokenizer)")
    ax.set_ylabel("rows")
    ax.set_title(f"token lengths of {len(lengths):,} kept rows")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with AtomicFile(path) as out:
        fig.savefig(out.handle, format="png", dpi=110)
        out.commit()
    plt.close(fig)


def write_card(report: dict, source: ModuleType, card: CardCollector, tokenizer) -> Path:
    """Write the card and its histogram beside the report; return the card's path."""
    train = Path(report["outputs"]["train"])
    card_path = train.with_name(report["dataset"] + CARD_SUFFIX)
    png_path = train.with_name(report["dataset"] + HISTOGRAM_SUFFIX)

    def tokens(record: bytes) -> int:
        turns = source.pairs(json.loads(record))
        return sum(len(tokenizer.encode(q + a, add_special_tokens=False)) for q, a in turns)

    lengths = sorted(tokens(record) for record in card.sample())
    if lengths:
        _plot(lengths, png_path)

    settings = report["settings"]
    lines = [
        f"# Data card: {report['dataset']}",
        "",
        (
            f"Source `{report['input']['path']}` ({report['source']}, SHA-256 {report['input']['sha256'][:16]}…); "
            f"layout `{settings['layout']}`, care reminder `{settings['care_reminder']}`, "
            f"filters: {', '.join(settings['filters']) or 'none'}."
        ),
        "",
        "## Rows",
        "",
        "| | rows |",
        "| --- | ---: |",
    ]
    lines += [
        f"| read | {report['read']:,} |",
        f"| train | {report['written']:,} |",
        f"| eval | {report['eval']:,} |",
        f"| duplicates | {report['duplicates']:,} |",
    ]
    lines += [f"| skipped: `{reason}` | {count:,} |" for reason, count in report["skipped"].items()]
    lines += [f"| changed: `{kind}` | {count:,} |" for kind, count in report["changes"].items()]
    lines += [
        "",
        "## Care advice",
        "",
        "| split | rows | advise care | urgent questions | answers urging emergency care |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for split, c in report["care"].items():
        urged = f"{c['urges_emergency']} ({c['urges_emergency_share']:.1%})" if c["urgent_questions"] else "–"
        lines.append(
            f"| {split} | {c['rows']:,} | {c['advises_care']:,} ({c['advises_care_share']:.1%}) | "
            f"{c['urgent_questions']:,} | {urged} |"
        )
    lines += ["", "## Token lengths", ""]
    if lengths:
        lines += [
            f"![token lengths]({png_path.name})",
            "",
            (
                f"{len(lengths):,} kept rows sampled by query key: p50 {percentile(lengths, 50)}, "
                f"p90 {percentile(lengths, 90)}, p99 {percentile(lengths, 99)}, max {lengths[-1]} tokens "
                "(question and answer text; `caretune check` counts the templated rows)."
            ),
        ]
    for title, rows in (("Longest kept rows", card.longest()), ("Shortest kept rows", card.shortest())):
        lines += ["", f"## {title}", ""]
        for line, record in rows:
            turns = source.pairs(json.loads(record))
            chars = sum(len(q) + len(a) for q, a in turns)
            lines.append(f"- line {line} ({chars} characters, {tokens(record)} tokens): {_turns_line(turns)}")
    lines += ["", "## Examples by reason", ""]
    if not card.examples:
        lines.append("No row was filtered or changed.")
    for reason in sorted(card.examples):
        lines += [f"### `{reason}`", ""]
        lines += [f"- line {line}: {_turns_line(turns)}" for line, turns in card.examples[reason]]
        lines.append("")
    with AtomicFile(card_path) as out:
        out.write("\n".join(lines).rstrip() + "\n")
        out.commit()
    return card_path
