"""Put first on PYTHONPATH by `caretune train` (caretune.training.train.launch_env), so every Python process of a
training run imports it at start-up: llamafactory-cli, torchrun and each of its ranks (torchrun starts ranks in
their own sessions, out of reach of a process-group kill), the Ray Train driver. Each asks the kernel for SIGKILL
when its parent dies, so killing `caretune train` ends the whole chain within moments, however it is killed. A
process whose owner is already gone when it starts ends at once. Any other sitecustomize on the path then runs as
it would have.

Limits: the signal follows the thread that started a process, so a child started by a thread that then ends is
killed with that thread (llamafactory-cli, torchrun and the Ray driver start theirs from the main thread); a child
forked without exec (data-loader and preprocessing workers) or an interpreter run with -S or -I loads no
sitecustomize and ends with its parent by its own means."""

import os
import sys

OWNER = "CARETUNE_TRAIN_OWNER"  # "PID:START" of the caretune train process, set by caretune.training.train
PR_SET_PDEATHSIG = 1


def _start_of(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def _die_with_parent() -> None:
    owner = os.environ.get(OWNER, "")
    if not owner or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    pid, _, start = owner.partition(":")
    if _start_of(pid) != start:
        os._exit(137)  # caretune train ended before this process could follow it


def _run_the_next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_die_with_parent()
_run_the_next_sitecustomize()
