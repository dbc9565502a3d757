"""The `caretune` command group: one-line errors for everything a user can cause."""

from __future__ import annotations

import click

from caretune import __version__
from caretune.basics.errors import UserError


class _UsageError(click.ClickException):
    """A command line click cannot parse: one line and a pointer to --help, exit 2 as click's own."""

    exit_code = 2


PIPELINE_ORDER = (
    "fetch",
    "convert",
    "check",
    "recipes",
    "plan",
    "preflight",
    "train",
    "runs",
    "eval",
    "mcq",
    "judge",
    "prefs",
    "report",
    "chat",
    "api",
    "webui",
    "export",
    "bench",
    "tiny-model",
)  # how `caretune --help` lists the commands: the pipeline's stages, then the tools


class _OneLineErrors(click.Group):
    """Every user-caused error (caretune.basics.errors.UserError, a path that cannot be used) ends as one line, exit 1;
    a command line that does not parse is one line too, exit 2. Commands are listed in pipeline order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: (PIPELINE_ORDER.index(name) if name in PIPELINE_ORDER else len(PIPELINE_ORDER), name))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            command = err.ctx.command_path if err.ctx else ctx.command_path
            raise _UsageError(f"{err.format_message()} (see `{command} --help`)") from None
        except UserError as err:
            raise click.ClickException(str(err)) from None
        except PermissionError as err:
            raise click.ClickException(
                f"{err.filename or err}: permission denied ({err.strerror}); choose a path you can write, or fix its permissions"
            ) from None
        except OSError as err:
            if not err.filename:  # not about a path the user gave: a bug, shown with its traceback
                raise
            raise click.ClickException(f"{err.filename}: {err.strerror or err}; choose another path") from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="caretune")
def main() -> None:
    """Fine-tune Qwen3 into a careful Chinese medical-consultation assistant with LLaMA-Factory."""
