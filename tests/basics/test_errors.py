"""The error hierarchy stays small: a subclass of UserError exists only where some code catches it by name."""

import re

from tests.helpers import ROOT

SOURCES = sorted([*(ROOT / "caretune").rglob("*.py"), *(ROOT / "converters").rglob("*.py")])


def test_every_subclass_of_the_error_base_is_caught_by_name():
    text = {path: path.read_text(encoding="utf-8") for path in SOURCES}
    user_errors = {"UserError"}
    grew = True
    while grew:  # subclasses of subclasses
        found = {
            name
            for source in text.values()
            for name, base in re.findall(r"^class (\w+)\((\w+)\):", source, flags=re.M)
            if base in user_errors
        }
        grew = not found <= user_errors
        user_errors |= found
    subclasses = user_errors - {"UserError"}
    assert {"RegistryError", "RecipeError", "PreflightError"} <= subclasses
    uncaught = {
        name for name in subclasses if not any(re.search(rf"except \(?[\w, ]*\b{name}\b", source) for source in text.values())
    }
    assert uncaught == set(), f"raise UserError instead, or catch them: {sorted(uncaught)}"
