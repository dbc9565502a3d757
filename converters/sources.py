"""The sources a conversion reads (by name), and the care policy each source's rows get."""

from __future__ import annotations

from types import ModuleType

from converters import chatmed, general, huatuo, prefs
from converters.choices import OFF
from converters.options import Options

_GENERAL_PREFS = prefs.general_source()
SOURCES: dict[str, ModuleType] = {module.NAME: module for module in (chatmed, huatuo, general, prefs, _GENERAL_PREFS)}


def care_policy(source: ModuleType, options: Options) -> str:
    """The care policy a source's rows get: off for general rows and for preference pairs (converters/prefs.py)."""
    return options.care_reminder if getattr(source, "CARE_REMINDERS", getattr(source, "MEDICAL", True)) else OFF
