"""Size limits that keep the house readable: no module of caretune/ or converters/ over 500 lines, no function over
80 (its decorators aside, its docstring included). An exception is named here with its reason."""

import ast
from pathlib import Path

from tests.helpers import ROOT

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
PACKAGES = ("caretune", "converters")
MODULE_EXCEPTIONS: dict[str, str] = {}  # repository-relative path -> why it may be longer
FUNCTION_EXCEPTIONS: dict[str, str] = {}  # "path:function" -> why it may be longer


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def function_lengths(path: Path) -> dict[str, int]:
    """Lines of every function and method, nested ones included, from its `def` to its last line (the longest of
    those that share a name)."""
    lengths: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lengths[node.name] = max(lengths.get(node.name, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_no_module_over_the_limit():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sources()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert set(long) <= set(MODULE_EXCEPTIONS), {k: v for k, v in long.items() if k not in MODULE_EXCEPTIONS}


def test_no_function_over_the_limit():
    long = {
        f"{path.relative_to(ROOT)}:{name}": lines
        for path in sources()
        for name, lines in function_lengths(path).items()
        if lines > MAX_FUNCTION_LINES
    }
    assert set(long) <= set(FUNCTION_EXCEPTIONS), {k: v for k, v in long.items() if k not in FUNCTION_EXCEPTIONS}


def test_the_checks_see_a_planted_breach(tmp_path):
    planted = tmp_path / "planted.py"
    body = "        x = 1\n" * (MAX_FUNCTION_LINES - 1) + "        return x\n"
    planted.write_text(f"class A:\n    def run(self):\n{body}\nclass B:\n    def run(self):\n        pass\n", encoding="utf-8")
    assert function_lengths(planted) == {"run": MAX_FUNCTION_LINES + 1}  # the long one of the two, whichever comes last


def test_every_named_exception_is_still_needed():
    paths = {str(path.relative_to(ROOT)): path for path in sources()}
    for name in MODULE_EXCEPTIONS:
        assert len(paths[name].read_text(encoding="utf-8").splitlines()) > MAX_MODULE_LINES, name
    for name in FUNCTION_EXCEPTIONS:
        path, function = name.split(":")
        assert function_lengths(paths[path]).get(function, 0) > MAX_FUNCTION_LINES, name
