"""`python -m caretune.cli`."""

from caretune.cli import main

main()
