"""`caretune runs`: the task center, from the files LLaMA-Factory and `caretune train` write."""

import json
import os
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from caretune.cli import main
from caretune.training import runs


def make_run(folder: Path, steps: int, total: int, *, results: dict | None = None, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "trainer_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            log.write(
                json.dumps(
                    {
                        "current_steps": step,
                        "total_steps": total,
                        "loss": 3.0 - step / 10,
                        "elapsed_time": f"0:00:{step:02d}",
                        "remaining_time": f"0:00:{total - step:02d}",
                    }
                )
                + "\n"
            )
        log.write('{"current_steps": 9')  # a line being written
    (folder / f"checkpoint-{steps}").mkdir()
    (folder / f"checkpoint-{steps}" / "trainer_state.json").write_text("{}", encoding="utf-8")
    if results is not None:
        (folder / "all_results.json").write_text(json.dumps(results), encoding="utf-8")
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "Qwen/Qwen3-8B"}', encoding="utf-8")
    stamp = time.time() - age_s
    os.utime(folder / "trainer_log.jsonl", (stamp, stamp))
    return folder


def test_states_progress_loss_metrics_and_eta(tmp_path):
    saves = tmp_path / "saves"
    make_run(saves / "a" / "finished", 5, 5, results={"train_loss": 2.6, "eval_loss": 2.4, "eval_runtime": 3.0})
    make_run(saves / "b" / "running", 3, 10)
    make_run(saves / "c" / "interrupted", 4, 10, age_s=runs.STALE_AFTER_S + 60)
    failed = make_run(saves / "d" / "failed", 2, 10, age_s=5)
    runs.write_status(failed, state=runs.FAILED, exit_code=1, model="Qwen/Qwen3-8B", recipe="recipes/x.yaml")
    by_name = {Path(r["run"]).name: r for r in runs.list_runs(saves)}
    assert set(by_name) == {"finished", "running", "interrupted", "failed"}  # checkpoint folders are not runs
    assert by_name["finished"]["state"] == "finished" and by_name["finished"]["metrics"] == {"eval_loss": 2.4}
    running = by_name["running"]
    assert running["state"] == "running" and (running["step"], running["total_steps"]) == (3, 10)
    assert running["last_loss"] == 2.7 and running["elapsed"] == "0:00:03" and running["eta"] == "0:00:07"
    assert by_name["interrupted"]["state"] == "interrupted" and by_name["interrupted"]["eta"] is None
    assert by_name["failed"]["state"] == "failed" and by_name["failed"]["exit_code"] == 1
    assert by_name["failed"]["recipe"] == "recipes/x.yaml" and by_name["running"]["model"] == "Qwen/Qwen3-8B"


def test_a_recorded_process_decides_running_or_interrupted(tmp_path):
    folder = make_run(tmp_path / "saves" / "r", 2, 10, age_s=runs.STALE_AFTER_S + 60)
    runs.write_status(folder, state=runs.RUNNING, pid=os.getpid(), pid_start=runs.process_start(os.getpid()))
    assert runs.read_run(folder)["state"] == "running"  # a live process, even with a quiet log
    runs.write_status(folder, pid=2**22 + 12345)  # no such process
    assert runs.read_run(folder)["state"] == "interrupted"


def test_a_reused_pid_is_not_the_run_s_process(tmp_path):
    """Liveness was judged by a bare PID, so a PID the system gave to another process looked alive forever."""
    folder = make_run(tmp_path / "saves" / "r", 2, 10, age_s=runs.STALE_AFTER_S + 60)
    runs.write_status(folder, state=runs.RUNNING, pid=os.getpid(), pid_start=runs.process_start(os.getpid()) - 1)
    assert runs.read_run(folder)["state"] == "interrupted"
    runs.write_status(folder, pid_start=None)  # a PID without its start time names no process for sure
    assert runs.read_run(folder)["state"] == "interrupted"
    ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    runs.write_status(folder, pid_start=ticks)  # an earlier caretune's record, in clock ticks since boot
    assert runs.read_run(folder)["state"] == "interrupted"


def test_a_zombie_has_ended():
    import subprocess
    import time

    child = subprocess.Popen(["true"])
    started = runs.process_start(child.pid)
    deadline = time.monotonic() + 10
    while runs.process_alive(child.pid, started) and time.monotonic() < deadline:  # ends, not yet reaped
        time.sleep(0.05)
    assert isinstance(started, float) and not runs.process_alive(child.pid, started)
    assert runs.process_alive(os.getpid(), runs.process_start(os.getpid()))
    child.wait()


def test_the_log_is_read_from_its_tail_in_bounded_memory(tmp_path):
    """A 69 MB log was read and parsed whole: 4.3 s and 551 MB."""
    import tracemalloc

    folder = tmp_path / "saves" / "big"
    folder.mkdir(parents=True)
    line = {"current_steps": 0, "total_steps": 200_000, "loss": 1.5, "elapsed_time": "1:00:00", "pad": "x" * 100}
    with open(folder / "trainer_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(1, 60_001):
            log.write(json.dumps({**line, "current_steps": step, "loss": 1.0 + step / 1e6}) + "\n")
        log.write(json.dumps({"current_steps": 60_001, "total_steps": 200_000, "eval_loss": 0.9}) + "\n")  # no loss
    assert (folder / "trainer_log.jsonl").stat().st_size > 8e6
    tracemalloc.start()
    run = runs.read_run(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert run["step"] == 60_001 and run["last_loss"] == 1.06 and peak < 2 << 20, peak


def test_the_table_survives_any_value(tmp_path):
    """The table crashed on list or dict fields, although --json did not."""
    folder = tmp_path / "saves" / "odd"
    folder.mkdir(parents=True)
    odd = {"current_steps": [1], "total_steps": {"a": 2}, "loss": [0.5], "elapsed_time": ["1s"], "remaining_time": {"x": 1}}
    (folder / "trainer_log.jsonl").write_text(json.dumps(odd) + "\n", encoding="utf-8")
    runs.write_status(folder, state=runs.FAILED, exit_code={"code": 1}, model=["m"], recipe=[1, 2])
    (folder / "all_results.json").write_text(json.dumps({"eval_loss": [1], "eval_acc": {"a": 1}}), encoding="utf-8")
    table = runs.format_runs(runs.list_runs(tmp_path / "saves"))
    assert "saves/odd" in table and "failed" in table
    result = CliRunner().invoke(main, ["runs", "--saves", str(tmp_path / "saves")])
    assert result.exit_code == 0 and "saves/odd" in result.output


def test_cli_table_and_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no runs under saves/ yet" in CliRunner().invoke(main, ["runs"]).output
    make_run(tmp_path / "saves" / "m" / "sft", 5, 5, results={"train_loss": 2.6})
    table = CliRunner().invoke(main, ["runs"]).output
    assert "saves/m/sft" in table and "finished" in table and "5/5" in table and "Qwen/Qwen3-8B" in table
    [run] = json.loads(CliRunner().invoke(main, ["runs", "--json"]).output)
    assert run["state"] == "finished" and run["last_loss"] == 2.5


def test_caretune_train_records_how_a_run_ended(tmp_path, monkeypatch):
    from caretune.training import train
    from caretune.training.preflight import Launch

    monkeypatch.chdir(tmp_path)
    for code, state in ((0, "finished"), (3, "failed")):
        output_dir = tmp_path / "saves" / f"exit{code}"
        monkeypatch.setattr(train, "command", lambda plan, code=code: [sys.executable, "-c", f"raise SystemExit({code})"])
        plan = Launch(recipe=Path("r.yaml"), args={"output_dir": str(output_dir), "model_name_or_path": "m"}, processes=1)
        assert train.run(plan) == code
        status = json.loads(runs.status_path(output_dir).read_text(encoding="utf-8"))
        assert status["state"] == state and status["exit_code"] == code and status["recipe"]["path"] == "r.yaml"
        assert status["model"] == "m" and status["started"] <= status["ended"]


def test_runs_recorded_by_caretune_train_are_listed_in_every_state(tmp_path):
    saves = tmp_path / "saves"
    failed = saves / "m" / "lora" / "sft"  # failed before its first step: only the status file exists
    failed.parent.mkdir(parents=True)
    runs.write_status(failed, state=runs.FAILED, exit_code=1, recipe="r.yaml", pid=1)
    starting = saves / "m2" / "lora" / "sft"  # started, no log yet
    starting.mkdir(parents=True)
    runs.write_status(
        starting, state=runs.RUNNING, exit_code=None, recipe="r.yaml", pid=os.getpid(), pid_start=runs.process_start(os.getpid())
    )
    found = {run["run"]: run for run in runs.list_runs(saves)}
    assert found[str(failed)]["state"] == "failed" and found[str(failed)]["exit_code"] == 1
    assert found[str(starting)]["state"] == "running"


def test_a_run_that_cannot_be_read_is_flagged_and_the_listing_goes_on(tmp_path):
    saves = tmp_path / "saves"
    make_run(saves / "good", 2, 4)
    bad = saves / "bad"
    bad.mkdir(parents=True)
    (bad / "trainer_log.jsonl").write_bytes(b'{"current_steps": 1, "loss": 1.0}\n\xff\xfe broken \x80\n')
    found = {Path(run["run"]).name: run for run in runs.list_runs(saves)}
    assert found["good"]["step"] == 2
    assert found["bad"]["step"] == 1  # the readable lines still count


def test_runs_json_is_strict_json(tmp_path):
    saves = tmp_path / "saves"
    make_run(saves / "nan", 2, 4, results={"eval_loss": float("nan")})
    result = CliRunner().invoke(main, ["runs", "--saves", str(saves), "--json"])
    assert result.exit_code == 0 and "NaN" not in result.stdout
    assert json.loads(result.stdout)[0]["metrics"]["eval_loss"] is None


def test_predict_folders_are_evaluations_not_training_runs(tmp_path):
    saves = tmp_path / "saves"
    make_run(saves / "lora" / "sft", 4, 4, results={"train_loss": 1.0})
    predict = saves / "lora" / "predict" / "emergency"
    predict.mkdir(parents=True)
    (predict / "trainer_log.jsonl").write_text('{"current_steps": 5, "total_steps": 6}\n', encoding="utf-8")
    (predict / "all_results.json").write_text('{"predict_bleu-4": 1.5}', encoding="utf-8")
    (predict / "generated_predictions.jsonl").write_text("{}\n", encoding="utf-8")
    found = {Path(run["run"]).name: run for run in runs.list_runs(saves)}
    assert found["sft"]["kind"] == "training" and found["emergency"]["kind"] == "evaluation"
    assert found["emergency"]["state"] == "finished"
    table = runs.format_runs(list(found.values()))
    assert "evaluation" in table and "5/6" not in table


def test_manifests_with_odd_numbers_or_deep_nesting_never_traceback(tmp_path, monkeypatch):
    """A pid of 1e400 (valid JSON: infinity) made `runs` and preflight raise OverflowError; JSON nested 200,000 deep
    raised RecursionError."""
    folder = make_run(tmp_path / "saves" / "inf", 2, 10, age_s=runs.STALE_AFTER_S + 60)
    runs.status_path(folder).write_text('{"state": "running", "pid": 1e400, "pid_start": 1e400}', encoding="utf-8")
    assert runs.read_run(folder)["state"] == "interrupted" and runs.live_run(folder) is None
    deep = make_run(tmp_path / "saves" / "deep", 2, 10)
    runs.status_path(deep).write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    assert runs.read_run(deep)["state"] in ("running", "interrupted")
    result = CliRunner().invoke(main, ["runs", "show", str(deep)])
    assert result.exit_code == 1 and "no readable run manifest" in result.output


def test_the_lock_follows_the_folder_not_the_name(tmp_path):
    """A symlinked path to the same output_dir got a lock of its own."""
    import pytest

    real = tmp_path / "saves" / "real"
    real.mkdir(parents=True)
    (tmp_path / "saves" / "alias").symlink_to(real)
    held = runs.claim_output_dir(real)
    try:
        with pytest.raises(runs.UserError, match="is being trained now"):
            runs.claim_output_dir(tmp_path / "saves" / "alias")
    finally:
        held.close()


def test_a_step_of_the_wall_clock_does_not_change_a_process_s_identity(monkeypatch):
    """psutil's create time is seconds since the epoch: boot time (moved by a clock step) plus ticks since boot."""
    import psutil

    started = runs.process_start(os.getpid())
    create_time, boot_time = psutil.Process.create_time, psutil.boot_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: create_time(self) + 3600.0)
    monkeypatch.setattr(psutil, "boot_time", lambda: boot_time() + 3600.0)  # the clock set an hour ahead
    assert runs.process_start(os.getpid()) == started and runs.process_alive(os.getpid(), started)
