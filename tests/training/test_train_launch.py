"""How `caretune train` launches LLaMA-Factory: torchrun, multi-node pass-through, Ray."""

from pathlib import Path

import pytest

from caretune.training.preflight import Launch, PreflightError, check_ray
from caretune.training.train import command, launch_env
from tests.helpers import ROOT


def plan(processes=1, **args):
    return Launch(recipe=Path("recipes/tiny-qwen3/lora_sft.yaml"), args=args, processes=processes)


def test_single_process_without_deepspeed_runs_plainly():
    env = launch_env(plan(), base={"PATH": "/usr/bin"})
    assert "FORCE_TORCHRUN" not in env and "NPROC_PER_NODE" not in env
    assert env["PATH"].split(":")[0].endswith("bin") and env["PATH"].endswith("/usr/bin")


@pytest.mark.parametrize(
    "processes, args, base",
    [
        (4, {}, {}),
        (1, {"deepspeed": "recipes/deepspeed/ds_z2.json"}, {}),
        (2, {}, {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29500"}),
    ],
)
def test_torchrun_for_deepspeed_several_gpus_or_nodes(processes, args, base):
    env = launch_env(plan(processes, **args), base={"PATH": "", **base})
    assert env["FORCE_TORCHRUN"] == "1" and env["NPROC_PER_NODE"] == str(processes)
    for key, value in base.items():
        assert env[key] == value  # multi-node settings reach LLaMA-Factory's launcher unchanged


def test_gpus_are_per_node_and_nodes_come_from_one_place():
    """--gpus meant every GPU in plan but GPUs per node in train; --nodes now stands beside it everywhere."""
    from caretune.training.preflight import node_count

    assert node_count(None, {}) == 1 and node_count(2, {}) == 2 and node_count(None, {"NNODES": "3"}) == 3
    with pytest.raises(PreflightError, match="--nodes 2 but NNODES=3"):
        node_count(2, {"NNODES": "3"})
    env = launch_env(Launch(recipe=Path("r.yaml"), args={}, processes=4, nodes=2), base={"PATH": ""})
    assert env["NNODES"] == "2" and env["NPROC_PER_NODE"] == "4" and env["FORCE_TORCHRUN"] == "1"


def test_ray_takes_over_the_launch():
    env = launch_env(plan(4, deepspeed="x.json"), base={"PATH": "", "USE_RAY": "1"})
    assert env["USE_RAY"] == "1" and "FORCE_TORCHRUN" not in env


def test_ray_without_ray_installed_is_a_preflight_error(monkeypatch):
    monkeypatch.setenv("USE_RAY", "1")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(PreflightError, match=r"USE_RAY=1 but Ray is not installed"):
        check_ray(Path("recipe.yaml"), {})


def test_command_passes_overrides_after_the_recipe():
    p = plan()
    p.overrides["resume_from_checkpoint"] = "saves/x/checkpoint-20"
    cmd = command(p)
    assert cmd[-3:] == ["train", "recipes/tiny-qwen3/lora_sft.yaml", "resume_from_checkpoint=saves/x/checkpoint-20"]


# A stand-in for `caretune train` -> llamafactory-cli -> torchrun -> rank: each level starts the next with the
# environment it was given; the rank in a session of its own, as torchrun starts ranks. Each prints its PID.
CHAIN = r"""
import os, subprocess, sys, time
depth = int(sys.argv[1])
print(os.getpid(), flush=True)
if depth:
    subprocess.Popen([sys.executable, __file__, str(depth - 1)], start_new_session=depth == 1)
time.sleep(120)
"""


def _pids_alive(pids: list[int]) -> list[int]:
    import psutil

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [pid for pid in pids if running(pid)]


def _supervised_owner(tmp_path, leaf: str):
    """A stand-in for caretune train: it starts CHAIN (llamafactory-cli -> torchrun -> rank) under the supervisor, as
    caretune train starts the real one, and sleeps; the chain prints its PIDs."""
    import subprocess
    import sys

    script = tmp_path / "chain.py"
    script.write_text(CHAIN.replace("time.sleep(120)", leaf + "\ntime.sleep(120)"), encoding="utf-8")
    owner_code = (
        "import subprocess, sys, time\n"
        "from caretune.training.train import launch_env, supervised\n"
        "from tests.training.test_train_launch import plan\n"
        f"subprocess.Popen(supervised([sys.executable, {str(script)!r}, '2']), env=launch_env(plan()), start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    return subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)


@pytest.mark.slow  # races processes
@pytest.mark.parametrize("kill", ["alone", "with its group"])
def test_the_supervisor_ends_every_process_under_a_killed_owner(tmp_path, kill):
    """SIGKILL to caretune train left llamafactory-cli training, re-parented to PID 1, and under torchrun a rank in
    its own session outlived even a process-group kill. Under the supervisor every level ends within moments."""
    import os
    import signal
    import time

    owner = _supervised_owner(tmp_path, "")
    pids = [int(owner.stdout.readline()) for _ in range(3)]  # llamafactory-cli, torchrun, the rank
    assert len(_pids_alive(pids)) == 3
    if kill == "alone":
        os.kill(owner.pid, signal.SIGKILL)
    else:
        os.killpg(owner.pid, signal.SIGKILL)
    owner.wait()
    started = time.monotonic()
    while _pids_alive(pids) and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert _pids_alive(pids) == [], "a process outlived caretune"
    print(f"orphan window ({kill}): {time.monotonic() - started:.2f} s")


@pytest.mark.slow  # races processes
def test_a_child_a_thread_started_lives_while_the_run_does(tmp_path):
    """The guard's parent-death signal followed the thread that started a process: a child started from a thread
    that then ended was SIGKILLed although the run was alive."""
    import os
    import signal
    import time

    leaf = (
        "import threading\n"
        "if depth == 0:\n"
        "    def start():\n"
        "        code = 'import os, time; print(os.getpid(), flush=True); time.sleep(120)'\n"
        "        child = subprocess.Popen([sys.executable, '-c', code])\n"
        "    thread = threading.Thread(target=start)\n"
        "    thread.start()\n"
        "    thread.join()\n"
    )
    owner = _supervised_owner(tmp_path, leaf)
    pids = [int(owner.stdout.readline()) for _ in range(4)]  # the chain, and the child the rank's thread started
    time.sleep(2)  # its thread has long ended
    assert len(_pids_alive(pids)) == 4
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    started = time.monotonic()
    while _pids_alive(pids) and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert _pids_alive(pids) == []


@pytest.mark.slow  # races processes
def test_the_runs_environment_kills_nothing_and_forkserver_children_work(tmp_path):
    """The guard's variable stayed in the environment: a Python started from it once the run had ended exited 137,
    and a forkserver child (Python 3.14's default on Linux) exited 255."""
    import subprocess
    import sys

    from caretune.training.train import launch_env, supervised

    env = launch_env(plan())
    later = subprocess.run([sys.executable, "-c", "print('trained')"], env=env, capture_output=True, text=True, timeout=60)
    assert later.returncode == 0 and later.stdout.strip() == "trained"
    code = (
        "import multiprocessing as mp\n"
        "if __name__ == '__main__':\n"
        "    for method in ('spawn', 'forkserver'):\n"
        "        with mp.get_context(method).Pool(1) as pool:\n"
        "            print(method, pool.apply(abs, (-3,)))\n"
    )
    script = tmp_path / "pool.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(supervised([sys.executable, str(script)]), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["spawn", "3", "forkserver", "3"], done.stderr[-2000:]


@pytest.mark.lf  # preflight
def test_a_second_train_on_a_live_output_dir_is_refused_in_one_line(tmp_path, monkeypatch):
    import json
    import subprocess
    import sys

    from click.testing import CliRunner

    from caretune.cli import main
    from caretune.training import runs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("do_train: true\noutput_dir: saves/x\n", encoding="utf-8")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom caretune.training.runs import claim_output_dir\n"
         "lock = claim_output_dir('saves/x')\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        runs.write_status(tmp_path / "saves/x", state=runs.RUNNING, pid=holder.pid, started="2026-12-03T10:00:00")
        result = CliRunner().invoke(main, ["train", "r.yaml"])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert f"saves/x is being trained now by another caretune train (process {holder.pid}" in result.output
        # the lock gone, a manifest whose process still runs is refused by preflight
        holder.kill()
        holder.wait()
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        runs.write_status(tmp_path / "saves/x", pid=sleeper.pid, pid_start=runs.process_start(sleeper.pid))
        result = CliRunner().invoke(main, ["preflight", "r.yaml"])
        sleeper.kill()
        assert result.exit_code == 1 and f"output_dir saves/x is being trained now (process {sleeper.pid}" in result.output
        assert json.loads(runs.status_path(tmp_path / "saves/x").read_text())["state"] == runs.RUNNING  # untouched
    finally:
        holder.kill()


RANK = r"""
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(1.0)  # a rank's own clean-up on SIGTERM
    (out / "cleaned").write_text("yes")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(out / "started").write_text("yes")
time.sleep(120)
"""


def test_sigterm_leaves_the_ranks_their_grace_under_the_supervisor(tmp_path):
    """llamafactory-cli dies at once on SIGTERM; with the guard its torchrun and ranks then got SIGKILL before their
    own SIGTERM handling ended, so --stop-timeout never applied to them."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "rank.py").write_text(RANK, encoding="utf-8")
    rank = [str(tmp_path / "rank.py"), str(tmp_path)]
    cli = f"import subprocess, sys; sys.exit(subprocess.run([sys.executable, *{rank!r}]).returncode)"  # a launcher
    owner_code = (
        "import sys\n"
        "from caretune.training import train\n"
        "from tests.training.test_train_launch import plan\n"
        f"train.command = lambda plan: [sys.executable, '-c', {cli!r}]\n"
        "sys.exit(-train.run(plan(2), stop_timeout=20))\n"  # two processes: torchrun launches them
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    owner.send_signal(signal.SIGTERM)
    owner.wait(timeout=60)
    assert (tmp_path / "cleaned").exists(), "the rank was killed before its SIGTERM handling ended"
