"""The data card a conversion writes: counts, care shares, a histogram PNG, examples, no personal data."""

from click.testing import CliRunner

from caretune.cli import main
from tests.helpers import CHATMED_SAMPLE, read_json


def test_card_beside_the_report_with_counts_examples_and_masked_text(project, monkeypatch):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["convert", "chatmed", str(CHATMED_SAMPLE), "--no-scrub-pii"], catch_exceptions=False)
    assert result.exit_code == 0 and "data card data/multi-med.card.md" in result.output
    card = (project / "data/multi-med.card.md").read_text(encoding="utf-8")
    report = read_json(project / "data/multi-med.report.json")
    assert f"| read | {report['read']} |" in card and "| skipped: `truncated_answer` | 1 |" in card
    assert "| changed: `care_reminder_added` | 2 |" in card
    assert "| train | 61 | 61 (100.0%) | 2 | 2 (100.0%) |" in card
    for reason in (
        "truncated_answer",
        "ai_self_reference",
        "short_answer",
        "answer_repeats_question",
        "contact_or_ad",
        "degenerate_repetition",
        "wrapper_stripped",
        "emergency_reminder_added",
    ):
        if reason in report["skipped"] or report["changes"].get(reason):
            assert f"### `{reason}`" in card, reason
    assert "## Longest kept rows" in card and "## Shortest kept rows" in card
    assert "![token lengths](multi-med.lengths.png)" in card
    assert (project / "data/multi-med.lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # personal data stays out of the card even when the data itself keeps it (--no-scrub-pii)
    assert "13812345678" in (project / "data/multi-med.json").read_text(encoding="utf-8") + (
        project / "data/multi-med-eval.json"
    ).read_text(encoding="utf-8")
    assert "13812345678" not in card and "010-62345678" not in card and "[电话]" in card
