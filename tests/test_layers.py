"""The import rules `make lint` enforces (pyproject.toml's import-linter contracts) fail on a planted breach."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the tree with `line` added to `module` (a path under the root)."""
    for folder in ("caretune", "converters"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    if module:
        with open(tmp_path / module, "a", encoding="utf-8") as handle:
            handle.write(f"\n{line}\n")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "COLUMNS": "300"},
    )


@pytest.fixture(scope="module", autouse=True)
def _lint_imports_installed():
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed beside this Python (make setup installs it)")


def test_the_tree_keeps_every_contract(tmp_path):
    result = lint_with(tmp_path, "", "")
    assert result.returncode == 0, result.stdout
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("caretune/prep/lengths.py", "import caretune.prep.check", "no import cycles"),  # check imports lengths
        ("caretune/serving/chat.py", "import caretune.evaluation.safety", "caretune's layers"),  # siblings kept apart
        ("caretune/planning/plan.py", "import caretune.cli", "caretune's layers"),  # a lower layer importing a higher
        ("caretune/prep/check.py", "import llamafactory.data", "one seam"),  # LLaMA-Factory outside caretune.lf
        ("converters/records.py", "import caretune.constants", "converters import only caretune.basics"),
        ("caretune/basics/pii.py", "import converters.records", "the basics never import the converters"),
        ("caretune/basics/pii.py", "import caretune.constants", "caretune's layers"),  # the basics import no other part
    ],
)
def test_a_planted_breach_fails_lint(tmp_path, module, line, contract):
    result = lint_with(tmp_path, module, line)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def test_the_converters_contract_names_every_part_but_the_basics():
    """A new part of caretune is forbidden to the converters as soon as it exists: the list must name it."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    forbidden = next(c for c in contracts if c["source_modules"] == ["converters"])["forbidden_modules"]
    parts = {
        f"caretune.{path.stem}"
        for path in (ROOT / "caretune").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert set(forbidden) == parts - {"caretune.basics"}
