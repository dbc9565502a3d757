"""`caretune train --ray` on a real local Ray cluster (127.0.0.1, 2 CPUs): the tiny recipe with 2 workers through
Ray Train to a finite loss and a saved adapter, a resume after a kill, and one-line refusals; the cluster is
stopped at the end and nothing is left running."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import converted_workspace, free_port, run_caretune, start_caretune

pytestmark = [pytest.mark.slow, pytest.mark.lf]  # lf: the workspace fits its rows with LLaMA-Factory's template

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'caretune[ray]')")
RAY = str(Path(sys.executable).parent / "ray")
RAY_WORKER_PORTS = (10002, 19999)
RECIPE = "recipes/tiny-qwen3/lora_sft.yaml"
OUTPUT = Path("saves/tiny-qwen3/lora/sft")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head on loopback with 2 CPUs, its own temp folder; stopped (and checked stopped) afterwards. Its GCS port
    lies outside Ray's worker-port range (10002-19999), which `ray start` refuses."""
    port = free_port()
    while RAY_WORKER_PORTS[0] <= port <= RAY_WORKER_PORTS[1]:
        port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    start += ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        left = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        assert left == [], f"Ray processes left running: {left}"


@pytest.fixture
def workspace(tmp_path):
    from caretune.training.tiny_model import build_tiny_model

    converted_workspace(tmp_path)
    path = tmp_path / RECIPE
    args = yaml.safe_load(path.read_text(encoding="utf-8"))
    args.update(model_name_or_path=str(build_tiny_model(tmp_path / "tiny")), max_steps=6, save_steps=2, cutoff_len=256)
    args.update(per_device_train_batch_size=2)
    path.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    return tmp_path


def losses(workspace):
    log = (workspace / OUTPUT / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in log if '"loss"' in line]


def ray_train_workers() -> list[int]:
    """The processes of Ray Train's workers (Ray titles them after their actor class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"RayTrainWorker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for_checkpoint(run, out: Path, step: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None and not (out / f"checkpoint-{step}" / "trainer_state.json").exists():
        time.sleep(0.3)
    assert run.poll() is None, run.stdout.read()[-3000:]
    time.sleep(1.0)  # let the checkpoint's files land


def test_two_workers_survive_a_worker_kill_then_resume_after_a_whole_kill(cluster, workspace):
    """--max-failures: a worker killed mid-run is restarted by Ray Train and the workers resume from the last
    checkpoint in output_dir (the manifest records the restart); then caretune and its driver killed outright, and
    a second caretune train resumes the run to its end."""
    out = workspace / OUTPUT
    run = start_caretune(workspace, "train", RECIPE, "--ray", cluster, "--gpus", "2", "--max-failures", "1", start_new_session=True)
    wait_for_checkpoint(run, out, 2)
    workers = ray_train_workers()
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    wait_for_checkpoint(run, out, 4)  # reached only after Ray Train restarted the workers
    manifest = json.loads((workspace / "saves/tiny-qwen3/lora/sft.run.json").read_text(encoding="utf-8"))
    (attempt,) = manifest["attempts"]
    assert attempt["ray_restarts"] == 1 and attempt["ray_worker_starts"][1]["resumed_from"], attempt["ray_worker_starts"]
    os.killpg(run.pid, signal.SIGKILL)  # caretune and its Ray driver, as a lost session would
    run.wait()
    assert not (out / "train_results.json").exists()
    time.sleep(5)  # Ray ends the dead driver's workers
    resumed = run_caretune(workspace, "train", RECIPE, "--ray", cluster, "--gpus", "2", timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming the unfinished run from" in resumed.stdout and "ray: 2 worker(s)" in resumed.stdout
    assert (out / "adapter_model.safetensors").exists()
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 6 and all(math.isfinite(v) for v in losses(workspace))
    manifest = json.loads((workspace / "saves/tiny-qwen3/lora/sft.run.json").read_text(encoding="utf-8"))
    assert manifest["state"] == "finished" and manifest["world_size"] == 2
    assert [a["resumed_from"] is not None for a in manifest["attempts"]] == [False, True]
    assert [a["ray_restarts"] for a in manifest["attempts"]] == [1, 0] and manifest["attempts"][0]["state"] == "interrupted"


def test_refusals_in_one_line(cluster, workspace):
    more = run_caretune(workspace, "train", RECIPE, "--ray", cluster, "--gpus", "3", timeout=300)
    assert more.returncode == 1 and "has 2 CPU(s); 3 worker(s) need one each" in more.stderr
    assert len(more.stderr.strip().splitlines()) == 1
    dead = run_caretune(workspace, "train", RECIPE, "--ray", f"127.0.0.1:{free_port()}", timeout=300)
    assert dead.returncode == 1 and "is not reachable" in dead.stderr and len(dead.stderr.strip().splitlines()) == 1
    lf_path = run_caretune(workspace, "train", RECIPE, timeout=300, env={"USE_RAY": "1", "RAY_ADDRESS": cluster})
    assert lf_path.returncode == 1 and "would wait forever" in lf_path.stderr, lf_path.stderr
