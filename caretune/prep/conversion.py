"""`caretune convert`: a raw file through the converters, with the data card written beside the outputs."""

from __future__ import annotations

from pathlib import Path

from caretune.basics.errors import UserError
from converters import chatmed
from converters.card import CardCollector
from converters.choices import FILTER_REASONS, SYSTEM_LAYOUT
from converters.options import HeldOut, Options, RunControls
from converters.outputs import Outputs
from converters.pipeline import convert_file
from converters.sources import SOURCES, care_policy
from converters.turns import TRAIN_LAST


def conversion_options(
    source_name: str,
    scrub_pii: bool,
    filter_set: str,
    keep: tuple[str, ...],
    care_reminder: str,
    layout: str,
    train_answers: str | None = None,
    cutoff_len: int = 0,
) -> Options:
    """The converters' options from the command line: `--filters all|none` less the filters `--keep` switches off;
    rows fitted to `cutoff_len` tokens (0: not fitted) with LLaMA-Factory's template counting the long ones."""
    if keep and filter_set == "none":
        raise UserError(f"--keep {keep[0]} switches one filter off, but --filters none already switches every filter off")
    if layout != SYSTEM_LAYOUT and source_name != chatmed.NAME:
        raise UserError(f"--layout {layout} is for ChatMed rows; {source_name} rows always keep the layout they have")
    source = SOURCES[source_name]
    if care_policy(source, Options(care_reminder=care_reminder)) != care_reminder:
        raise UserError(f"--care-reminder {care_reminder}: {source_name} rows get no care reminders")
    if getattr(source, "PREFERENCE", False) and train_answers not in (None, TRAIN_LAST):
        raise UserError(f"--train-answers {train_answers}: a preference pair trains the answers to its last question")
    filters = frozenset(FILTER_REASONS if filter_set == "all" else ()) - set(keep)
    from caretune.prep.fitting import TemplateTokenCounter

    return Options(
        scrub_pii=scrub_pii,
        filters=filters,
        strip_wrappers=filter_set == "all",
        care_reminder=care_reminder,
        layout=layout,
        train_answers=train_answers,
        cutoff_len=cutoff_len or None,
        count=TemplateTokenCounter() if cutoff_len else None,
    )


def source_for(command: str, domain: str) -> str:
    """The converter a `caretune convert COMMAND` runs: preference pairs of a general set have their own."""
    return f"{command}-general" if command == "prefs" and domain == "general" else command


def convert(
    source_name: str,
    raw: str,
    *,
    out: str | None,
    data_dir: str,
    options: Options,
    held_out: HeldOut,
    registry_path: str | None,
    card: bool,
    controls: RunControls,
) -> tuple[dict, Outputs, str]:
    """Convert `raw`; returns the report, the outputs and what the summary line says of the data card."""
    source = SOURCES[source_name]
    outputs = Outputs.for_source(source, out, data_dir)
    collector = CardCollector() if card else None
    card_note = ""

    def write_data_card(report: dict) -> None:  # under the output set's lock, beside the outputs it describes
        nonlocal card_note
        from caretune.prep.datacard import write_card
        from caretune.prep.tokenizer import TokenizerError, reading_tokenizer

        try:
            card_note = f"; data card {write_card(report, source, collector, reading_tokenizer())}"
        except TokenizerError as err:
            card_note = f"; no data card ({err})"

    report = convert_file(
        source,
        raw,
        outputs,
        held_out,
        options=options,
        registry_path=registry_path,
        controls=controls,
        card=collector,
        on_published=write_data_card if collector is not None else None,
    )
    return report, outputs, card_note


def registry_note(outputs: Outputs, registry_path: str) -> str:
    """What the summary line adds when the outputs lie outside the registry's folder (LLaMA-Factory's
    dataset_dir): their entries then hold an absolute path, valid on this machine only."""
    from caretune.basics.registry import relative_file_name

    file_name = relative_file_name(outputs.train, registry_path)
    if not Path(file_name).is_absolute():
        return ""
    folder = Path(registry_path).resolve().parent
    return f" (absolute path {file_name}: the outputs are outside {folder}, so the entries hold paths of this machine)"
