"""The one base class of every error a user can cause (bad input, paths, values, a busy lock).

The `caretune` command catches it once and prints its message as one line, exit 1; the message names the
file, line or key and the fix. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix; the message says what and where."""
