"""`caretune runs`: every run under `saves/` at a glance, from the files LLaMA-Factory writes.

A run folder holds `trainer_log.jsonl` (one line per logging step: steps, loss, elapsed and remaining
time), `trainer_state.json` (at each checkpoint), and `all_results.json` when it ends. `caretune train`
also writes `<output_dir>.run.json` beside the folder, with the recipe, the model, its process id and, at
the end, how it ended; runs started another way (the WebUI, `llamafactory-cli`) are judged by their files:
results mean finished, a log written in the last STALE_AFTER_S seconds means running, else interrupted.
No GPU and no LLaMA-Factory import is needed.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from caretune.basics.errors import UserError
from caretune.constants import PREDICT_RESULTS, PREDICTIONS_FILE, RESULT_FILES, TRAINER_LOG, TRAINER_STATE
from caretune.recipe import SAVES

RUN_STATUS_SUFFIX = ".run.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LOG_TAIL_BYTES = 256 << 10  # how much of a trainer log `runs` reads, from its end
STALE_AFTER_S = 600  # a log untouched this long, with no process known to run it: interrupted
RUN_FILES = (TRAINER_LOG, TRAINER_STATE, "all_results.json")
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"
# result keys that are throughput, not quality
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "total_flos", "epoch")


def lock_path(output_dir: str | os.PathLike) -> Path:
    """The lock `caretune train` holds on an output_dir while it trains there (beside the folder a symlink or
    relative path leads to, as the manifest)."""
    output_dir = Path(output_dir).resolve()
    return output_dir.with_name(output_dir.name + ".run.lock")


def status_path(output_dir: str | os.PathLike) -> Path:
    """Where `caretune train` records a run: beside its folder (LLaMA-Factory wants the folder itself empty)."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + RUN_STATUS_SUFFIX)


def load_manifest(run: str | os.PathLike) -> tuple[dict, Path]:
    """(manifest, output_dir) of a run given as its output_dir or its .run.json."""
    path = Path(run)
    output_dir = path.with_name(path.name.removesuffix(RUN_STATUS_SUFFIX)) if path.name.endswith(RUN_STATUS_SUFFIX) else path
    manifest = _read_json(status_path(output_dir))
    if manifest is None:
        raise UserError(f"{status_path(output_dir)}: no readable run manifest (caretune train writes one beside each run)")
    return manifest, output_dir


def read_manifest(output_dir: str | os.PathLike) -> dict:
    """The manifest beside `output_dir`, or {} when there is none readable."""
    return _read_json(status_path(output_dir)) or {}


def live_run(output_dir: str | os.PathLike) -> dict | None:
    """The manifest of the run in `output_dir` while the process it records as training there still runs."""
    manifest = read_manifest(output_dir)
    alive = manifest.get("state") == RUNNING and process_alive(manifest.get("pid"), manifest.get("pid_start"))
    return manifest if alive else None


def claim_output_dir(output_dir: str | os.PathLike):
    """Hold `output_dir` for one `caretune train`: the returned file keeps an exclusive lock until it is closed or
    this process ends; refused in one line while another caretune train holds it."""
    import fcntl

    lock = lock_path(output_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock, "a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        manifest = read_manifest(output_dir)
        raise UserError(
            f"{output_dir} is being trained now by another caretune train (process {manifest.get('pid', '?')}, started "
            f"{manifest.get('started', '?')}); wait for it to end, or stop it, then run again"
        ) from None
    return handle


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, to resume from."""
    steps = [
        (int(m.group(1)), p)
        for p in output_dir.glob("checkpoint-*")
        if p.is_dir() and (m := CHECKPOINT.match(p.name)) and (p / TRAINER_STATE).exists()
    ]
    return max(steps)[1] if steps else None


def trained_by(adapter_dir: str | os.PathLike | None) -> dict | None:
    """The run an adapter came from, as evaluations record it: its manifest's path and SHA-256 (None for the base
    model, or an adapter trained without caretune train)."""
    if not adapter_dir:
        return None
    manifest = status_path(adapter_dir)
    if not manifest.is_file():
        return None
    import hashlib

    return {"manifest": str(manifest), "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}


def manifest_digest_line(output_dir: str | os.PathLike) -> str:
    """The manifest's path and SHA-256, to keep elsewhere: a copy of the digest detects any later edit of the file."""
    from caretune.basics.files import sha256_file

    path = status_path(output_dir)
    return f"manifest    {path}  sha256 {sha256_file(path)} (keep it elsewhere: an edited manifest no longer matches)"


def write_status(output_dir: str | os.PathLike, **fields) -> None:
    """Merge `fields` into a run's status file, atomically."""
    from caretune.basics.files import write_json_atomic

    path = status_path(output_dir)
    current = _read_json(path) or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**current, **fields})


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        return None
    return data if isinstance(data, dict) else None


def _log_tail(path: Path) -> list[dict]:
    """The entries in the last LOG_TAIL_BYTES of a trainer log, oldest first (memory bounded whatever its size);
    a damaged line, or one being written, is skipped."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - LOG_TAIL_BYTES))
            lines = log.read().splitlines()
    except OSError:
        return []
    if size > LOG_TAIL_BYTES:
        lines = lines[1:]  # the first is cut
    entries = []
    for line in lines:
        try:
            entry = json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def process_start(pid: int) -> float | None:
    """When a process started, in seconds since boot (psutil's create time less the boot time, so a step of the wall
    clock does not move it): with its PID, it names one process, where a PID alone may be given to another once the
    first ends. None when there is no such process."""
    try:
        return round(psutil.Process(pid).create_time() - psutil.boot_time(), 3)
    except psutil.Error:
        return None


def process_alive(pid: object, started: object) -> bool:
    """Whether the process recorded as (`pid`, `started`) still runs; without its start time, no PID is trusted (nor
    an earlier caretune's record in clock ticks, which no start time in seconds equals)."""
    if type(pid) is not int or pid <= 0 or type(started) is not float:
        return False
    try:
        ended = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # a zombie has ended
    except psutil.Error:
        return False
    return not ended and process_start(pid) == started


def find_runs(root: Path) -> list[Path]:
    """Folders under `root` holding a run's files, or recorded by `caretune train` (even before the folder has
    any file); checkpoint folders inside a run are not runs."""
    found = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("checkpoint-"))
        if any(name in files for name in RUN_FILES):
            found.add(Path(folder))
        found.update(Path(folder) / name.removesuffix(RUN_STATUS_SUFFIX) for name in files if name.endswith(RUN_STATUS_SUFFIX))
    return sorted(found)


def is_evaluation(folder: Path) -> bool:
    """A predict run (LLaMA-Factory's trainer writing predictions), not a training run."""
    return not (folder / RESULT_FILES[0]).exists() and any((folder / name).exists() for name in (PREDICTIONS_FILE, PREDICT_RESULTS))


def read_run(folder: Path, now: float | None = None) -> dict:
    """One run's state, progress, last loss, metrics and times; a run that cannot be read is flagged."""
    try:
        return _read_run(folder, now)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as err:
        return {
            "run": str(folder),
            "kind": None,
            "state": "unreadable",
            "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            **dict.fromkeys(("model", "recipe", "exit_code", "step", "total_steps", "last_loss", "elapsed", "eta", "updated")),
            "metrics": {},
        }


def _read_run(folder: Path, now: float | None) -> dict:
    now = time.time() if now is None else now
    status = _read_json(status_path(folder)) or {}
    log_path = folder / TRAINER_LOG
    log = _log_tail(log_path)
    last = log[-1] if log else {}
    losses = [entry["loss"] for entry in log if _number(entry.get("loss"))]
    results = _read_json(folder / "all_results.json") or {}
    metrics = {
        key: value for key, value in results.items() if key.startswith(("eval_", "predict_")) and not key.endswith(NOT_METRICS)
    }
    state_file = _read_json(folder / TRAINER_STATE) or {}
    adapter = _read_json(folder / "adapter_config.json") or {}
    log_age = now - log_path.stat().st_mtime if log_path.exists() else None

    evaluation = is_evaluation(folder)
    if evaluation:
        state = (
            FINISHED
            if results or (folder / "predict_results.json").exists()
            else RUNNING
            if log_age and log_age < STALE_AFTER_S
            else INTERRUPTED
        )
    elif status.get("state") in (FINISHED, FAILED, INTERRUPTED):
        state = status["state"]
    elif status.get("state") == RUNNING:
        state = RUNNING if process_alive(status.get("pid"), status.get("pid_start")) else (FINISHED if results else INTERRUPTED)
    elif results:
        state = FINISHED
    elif log_age is not None and log_age < STALE_AFTER_S:
        state = RUNNING
    else:
        state = INTERRUPTED
    step = last.get("current_steps", state_file.get("global_step"))
    total = last.get("total_steps", state_file.get("max_steps"))
    return {
        "run": str(folder),
        "kind": "evaluation" if evaluation else "training",
        "model": status.get("model") or adapter.get("base_model_name_or_path"),
        "recipe": recipe.get("path") if isinstance(recipe := status.get("recipe"), dict) else recipe,
        "state": state,
        "exit_code": status.get("exit_code"),
        "step": None if evaluation else step,
        "total_steps": None if evaluation else total,
        "last_loss": losses[-1] if losses else results.get("train_loss") if _number(results.get("train_loss")) else None,
        "metrics": metrics,
        "elapsed": last.get("elapsed_time"),
        "eta": last.get("remaining_time") if state == RUNNING else None,
        "updated": datetime.fromtimestamp(log_path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        if log_path.exists()
        else None,
    }


def list_runs(root: str | os.PathLike = SAVES) -> list[dict]:
    """Every run under `root`, in folder order, as `caretune runs` shows them."""
    return [read_run(folder) for folder in find_runs(Path(root))]


def strict(value):
    """`value` with NaN and infinities as None, so strict JSON parsers read it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    return value


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: object) -> str:
    """A table cell for any value a run's files may hold: '-' for none, one line, at most 60 characters."""
    if value is None or value == "":
        return "-"
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:59] + "…"


def format_runs(runs: list[dict]) -> str:
    """The task center as a table (whatever the values in a run's files)."""
    header = f"{'run':<40} {'kind':<10} {'state':<12} {'step':>11} {'loss':>8} {'elapsed':>9} {'eta':>9}  model / metrics"
    lines = [header, "-" * len(header)]
    for run in runs:
        step = f"{_text(run['step'])}/{_text(run['total_steps'])}" if run["step"] is not None else "-"
        loss = f"{run['last_loss']:.4f}" if _number(run["last_loss"]) else "-"
        state = _text(run["state"]) + (f" ({_text(run['exit_code'])})" if run["state"] == FAILED and run["exit_code"] else "")
        metrics = ", ".join(f"{key} {value:.4g}" for key, value in sorted(run["metrics"].items()) if _number(value))
        detail = _text(run.get("error")) if run.get("error") else _text(run["model"] or "?") + ("; " + metrics if metrics else "")
        lines.append(
            f"{run['run']:<40} {_text(run['kind']):<10} {state:<12} {step:>11} {loss:>8} {_text(run['elapsed']):>9} "
            f"{_text(run['eta']):>9}  {detail}"
        )
    return "\n".join(lines)
