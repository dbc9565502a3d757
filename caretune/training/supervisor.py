"""The supervisor `caretune train` runs a training under: `python -m caretune.training.supervisor PARENT -- CMD...`.

It makes itself the subreaper of everything it starts (PR_SET_CHILD_SUBREAPER: a process whose parent dies is
re-parented to it, not to PID 1, so torchrun's ranks in their sessions of their own stay in its tree) and asks for
SIGUSR2 when `caretune train` (PARENT) dies, however it dies. Then it SIGKILLs its whole tree and exits. It runs in a
session of its own, so a kill of caretune's process group reaches it only through that signal.

Nothing is put into the training's environment, so a process started later from that environment, a child started
from a thread that then ends, and `spawn` or `forkserver` children all live as they would without caretune. When
CMD ends, what is left of the tree gets LEFTOVER_GRACE_S to end on its own (or, while `caretune train` stops the
run, its stop timeout), then it is killed. The exit status is CMD's (128 + the signal that ended it). Standard
library only: it starts before anything else is imported.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
PARENT_DIED = signal.SIGUSR2
LEFTOVER_GRACE_S = 5.0
POLL_S = 0.1


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after the state
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree() -> None:
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(keep: int) -> None:
    """Collect the exit of every adopted process that has ended (not `keep`, whose status Popen reads)."""
    for pid in descendants(os.getpid()):
        if pid != keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass  # not ours to wait for: a grandchild whose parent lives


def _alive(keep: int) -> list[int]:
    alive = []
    for pid in descendants(os.getpid()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z" and pid != keep:
            alive.append(pid)
    return alive


def main(argv: list[str]) -> int:
    parent, separator, *command = argv
    if separator != "--" or not command:
        print("usage: python -m caretune.training.supervisor PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    stopping: list[int] = []

    def parent_died(*_args) -> None:
        _kill_tree()
        os._exit(128 + signal.SIGKILL)

    signal.signal(PARENT_DIED, parent_died)
    for sig in (signal.SIGTERM, signal.SIGINT):  # caretune train signals the tree itself: the children decide
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        libc.prctl(PR_SET_PDEATHSIG, PARENT_DIED)
    if os.getppid() != int(parent):  # caretune train ended before the signal was asked for
        return 128 + signal.SIGKILL
    child = subprocess.Popen(command)
    while (code := child.poll()) is None:
        _reap(child.pid)
        time.sleep(POLL_S)
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while _alive(child.pid) and (stopping or time.monotonic() < deadline):
        _reap(child.pid)
        time.sleep(POLL_S)
    _kill_tree()
    _reap(child.pid)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
