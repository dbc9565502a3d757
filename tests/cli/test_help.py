"""Every command's --help against its stored copy (tests/data/cli_help.txt): a change to a command's interface shows
here, and is made on purpose. After an intended change: python -m tests.cli.test_help > tests/data/cli_help.txt"""

import click
from click.testing import CliRunner

from caretune.cli import main
from tests.helpers import ROOT

STORED = ROOT / "tests" / "data" / "cli_help.txt"


def help_pages(command: click.Command = main, path: tuple[str, ...] = ()) -> str:
    """`caretune ... --help` of the command at `path` and of every command below it, at a fixed width."""
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=120, prog_name="caretune")
    assert result.exit_code == 0, result.output
    pages = [f"=== {' '.join(('caretune', *path))}\n{result.output}"]
    if isinstance(command, click.Group):
        pages += [help_pages(sub, (*path, name)) for name, sub in sorted(command.commands.items())]
    return "".join(pages)


def test_every_command_help_equals_its_stored_copy():
    assert help_pages() == STORED.read_text(encoding="utf-8")


if __name__ == "__main__":
    print(help_pages(), end="")
