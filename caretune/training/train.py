"""`caretune train`: preflight, then LLaMA-Factory's own launcher (torchrun / DeepSpeed / multi-node)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from caretune.constants import STOP_TIMEOUT_S
from caretune.lf import cli_command
from caretune.training.preflight import Launch, first_node, ray_requested, visible_gpu_count

POLL_S = 0.5


def launch_env(launch: Launch, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `llamafactory-cli train`: torchrun whenever DeepSpeed, several processes or nodes,
    unless Ray launches the workers (`--ray`, or USE_RAY=1 for LLaMA-Factory's own Ray launcher). Nothing of
    caretune's goes into it: the supervisor (`supervised`) keeps the run from outliving this process."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)  # torchrun lives beside this interpreter
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if launch.nodes > 1:
        env["NNODES"] = str(launch.nodes)
    multi_node = int(env.get("NNODES", "1")) > 1
    if launch.ray_spec is not None:
        env.pop("USE_RAY", None)
        return env  # Ray Train sets up torch.distributed in each worker
    if ray_requested(env):
        return env  # LLaMA-Factory starts `ray_num_workers` Ray workers itself; torchrun would bypass Ray
    if launch.processes > 1 or launch.args.get("deepspeed") or multi_node:
        env["FORCE_TORCHRUN"] = "1"
        env["NPROC_PER_NODE"] = str(launch.processes)
    return env


def supervised(cmd: list[str]) -> list[str]:
    """`cmd` under caretune.training.supervisor: the subreaper of the whole run, which kills it when this process
    dies, however it dies (run it in a session of its own)."""
    return [sys.executable, str(Path(__file__).with_name("supervisor.py")), str(os.getpid()), "--", *cmd]


def command(launch: Launch) -> list[str]:
    """The `llamafactory-cli train` command line, with preflight's overrides (e.g. resume_from_checkpoint), or
    for `--ray` the Ray Train driver (caretune.training.ray_train) on its spec."""
    if launch.ray_spec is not None:
        return [sys.executable, "-m", "caretune.training.ray_train", str(launch.ray_spec)]
    return [*cli_command(), "train", str(launch.recipe), *(f"{key}={value}" for key, value in launch.overrides.items())]


def use_ray(launch: Launch, address: str, gpus: int | None, max_failures: int = 0) -> None:
    """Make `launch` a Ray Train launch on the cluster at `address`: workers from `gpus` or the cluster's devices
    (checked against it), restarted up to `max_failures` times, the recipe's keys with preflight's overrides in a
    spec file beside the run."""
    import json

    from caretune.training.ray_train import check_cluster, spec

    use_gpu = visible_gpu_count() > 0
    launch.processes = check_cluster(address, gpus, use_gpu)
    output_dir = Path(launch.args.get("output_dir") or "saves/ray")
    launch.ray_spec = output_dir.with_name(output_dir.name + ".ray.json")
    launch.ray_spec.parent.mkdir(parents=True, exist_ok=True)
    args = {**launch.args, **launch.overrides}
    storage = Path(".cache") / "ray"
    launch.ray_spec.write_text(
        json.dumps(spec(args, launch.processes, use_gpu, address, storage, max_failures), indent=2), encoding="utf-8"
    )


def run(launch: Launch, stop_timeout: float = STOP_TIMEOUT_S) -> int:
    """Launch training; return LLaMA-Factory's exit code. The run's manifest and state are recorded beside its
    output_dir (caretune.training.manifest; running, then finished, failed or interrupted).

    SIGTERM or SIGINT to caretune is passed to every process under it (llamafactory-cli, torchrun, every rank);
    caretune waits `stop_timeout` seconds for them to end, then kills what is left. If caretune is killed outright
    (SIGKILL, alone or with its process group), the supervisor it runs under (`supervised`) kills every process of
    the run, torchrun's ranks included, so nothing trains on once caretune is gone."""
    from caretune.training.manifest import attempt_start, end_manifest, now, start_manifest
    from caretune.training.runs import (
        FAILED,
        FINISHED,
        INTERRUPTED,
        RUNNING,
        process_start,
        read_manifest,
        status_path,
        write_status,
    )

    if launch.move_aside is not None:
        old, aside = launch.move_aside
        old.rename(aside)
        if status_path(old).exists():
            status_path(old).rename(status_path(aside))
    env = launch_env(launch)
    # the others train into the same output_dir and record nothing, so they neither overwrite its manifest nor look to
    # it like another run
    output_dir = launch.args.get("output_dir") if first_node(env) else None
    manifest = start_manifest(launch.recipe, launch.args, launch.processes, command(launch), env) if output_dir else {}
    resumed_from = launch.overrides.get("resume_from_checkpoint")
    earlier = (read_manifest(output_dir).get("attempts") or []) if output_dir and resumed_from else []
    for attempt in earlier:
        attempt.setdefault("state", INTERRUPTED)  # killed before it could record its end
    attempts = [*earlier, attempt_start(manifest, resumed_from)]
    process = subprocess.Popen(supervised(command(launch)), env=env, start_new_session=True)
    if output_dir:
        write_status(
            output_dir,
            **manifest,
            state=RUNNING,
            pid=process.pid,
            pid_start=process_start(process.pid),
            model=launch.args.get("model_name_or_path"),
            processes=launch.processes,
            exit_code=None,
            started=now(),
            ended=None,
            attempts=attempts,
            **dict.fromkeys(("last_step", "last_loss", "outputs", "checkpoints", "base_model", "paths")),  # at its end
        )
    # under torchrun, llamafactory-cli only launches it: it is spared, and ends when torchrun does (its end would
    # otherwise start the supervisor's leftover grace before the ranks' own stop)
    code, stopping = _wait_forwarding_signals(process, env.get("FORCE_TORCHRUN") == "1", stop_timeout)
    if output_dir:
        state = FINISHED if code == 0 else INTERRUPTED if stopping or code < 0 or code in (130, 143) else FAILED
        ended = {"state": state, "exit_code": code, "ended": now()}
        end = end_manifest(Path(output_dir), launch.args)
        attempts = read_manifest(output_dir).get("attempts") or attempts  # Ray Train's workers add to the last
        attempts[-1].update(ended, last_step=end["last_step"])
        write_status(output_dir, **ended, **end, attempts=attempts)
    return code


def _wait_forwarding_signals(process: subprocess.Popen, torchrun: bool, stop_timeout: float) -> tuple[int, list]:
    """(exit code, [(signal, when)] caretune was asked to stop by): SIGTERM and SIGINT are passed to the whole tree
    (sparing torchrun's launcher), and what is left `stop_timeout` seconds later is killed."""
    stopping: list[tuple[int, float]] = []  # (signal, when) once caretune is asked to stop

    def forward(signum, frame) -> None:
        stopping.append((signum, time.monotonic()))
        _signal_tree(signum, spare=_launcher(process.pid) if torchrun else ())

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = process.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() > stopping[0][1] + stop_timeout:
                    _signal_tree(signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        _wait_for_tree(max(1.0, stopping[0][1] + stop_timeout - time.monotonic()))
        code = code if code else -stopping[0][0]
    return code, stopping


def _tree() -> list[psutil.Process]:
    """Every process under caretune: the supervisor, the launcher and the ranks torchrun started."""
    return psutil.Process().children(recursive=True)


def _launcher(pid: int) -> list[int]:
    """The oldest child of `pid` (under the supervisor: llamafactory-cli, torchrun's launcher), or none."""
    try:
        children = [(child.create_time(), child.pid) for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []
    return [min(children)[1]] if children else []


def _signal_tree(signum: int, spare: list[int] | tuple = ()) -> None:
    """Send `signum` to every process under caretune (but those in `spare`)."""
    for process in _tree():
        if process.pid not in spare:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signum)  # psutil checks first that the PID is still that process


def _wait_for_tree(timeout: float) -> None:
    """Wait until no process is left under caretune (the ranks torchrun started), killing them past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [process for process in _tree() if _running(process)]:
            return
        time.sleep(0.2)
    _signal_tree(signal.SIGKILL)


def _running(process: psutil.Process) -> bool:
    """Not ended: a zombie has ended, and waits only to be reaped."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
