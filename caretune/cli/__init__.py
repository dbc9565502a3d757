"""The `caretune` command, one module per pipeline stage. Heavy libraries (torch, transformers, LLaMA-Factory)
load inside commands only."""

from caretune.cli import evaluation, prep, runs, serving, tools, training  # noqa: F401  (each registers its commands)
from caretune.cli.base import main

__all__ = ["main"]
