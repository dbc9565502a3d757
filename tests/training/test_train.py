"""Real LLaMA-Factory training of the tiny Qwen3 on CPU through `caretune train`:
single process, resume after a kill, DeepSpeed ZeRO-2 over 2 processes (gloo), two nodes on loopback."""

import json
import math
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import yaml

from caretune.training.runs import status_path
from tests.helpers import converted_workspace, free_port, start_caretune

pytestmark = [pytest.mark.lf, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from caretune.training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen3")


@pytest.fixture
def workspace(tmp_path, tiny_model):
    converted_workspace(tmp_path)
    for task in ("lora_sft", "predict", "chat", "export"):
        path = tmp_path / "recipes" / "tiny-qwen3" / f"{task}.yaml"
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
        args["model_name_or_path"] = str(tiny_model)
        if task == "lora_sft":
            args.update(max_steps=4, save_steps=2, cutoff_len=256, per_device_train_batch_size=2)
        path.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    return tmp_path


RECIPE = "recipes/tiny-qwen3/lora_sft.yaml"
OUTPUT = Path("saves/tiny-qwen3/lora/sft")


def caretune(workspace, *args, env=None, **kwargs):
    return start_caretune(workspace, *args, env={"LLAMAFACTORY_VERBOSITY": "INFO", **(env or {})}, start_new_session=True, **kwargs)


def finish(process, timeout=420):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def losses(output_dir):
    log = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in log if "loss" in entry]


def test_single_process_training(workspace):
    output = finish(caretune(workspace, "train", RECIPE))
    assert "launch: " in output and "FORCE_TORCHRUN" not in output.split("launch: ")[1].splitlines()[0]
    out = workspace / OUTPUT
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert (out / "training_loss.png").exists()
    values = losses(out)
    assert len(values) == 4 and all(math.isfinite(v) for v in values)
    again = caretune(workspace, "train", RECIPE)
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 1 and "holds a finished run; pass --overwrite" in output


def test_resume_after_kill_loses_no_step(workspace):
    out = workspace / OUTPUT
    first = caretune(workspace, "train", RECIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if (out / "checkpoint-2" / "trainer_state.json").exists():
            break
        time.sleep(0.2)
    assert first.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.5)  # let the checkpoint's files land
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "train_results.json").exists()
    resumed_from = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())

    output = finish(caretune(workspace, "train", RECIPE))
    assert f"resuming the unfinished run from {OUTPUT}/checkpoint-{resumed_from}" in output
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [
        entry["current_steps"] for entry in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "loss" in entry
    ]
    # The log is appended across runs: the second run's part starts right after the checkpoint.
    start = len(steps) - 1 - steps[::-1].index(resumed_from + 1)
    assert steps[start:] == list(range(resumed_from + 1, 5))


def test_deepspeed_zero2_two_processes(workspace):
    recipe = workspace / RECIPE
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    args.update(deepspeed="recipes/deepspeed/ds_z2.json", max_steps=2)
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    output = finish(caretune(workspace, "train", RECIPE, "--gpus", "2", env={"MASTER_PORT": str(free_port())}))
    assert "FORCE_TORCHRUN=1 NPROC_PER_NODE=2" in output
    shards = sorted(p.name for p in (workspace / OUTPUT / "checkpoint-2" / "global_step2").iterdir())
    assert any("rank_0" in name for name in shards) and any("rank_1" in name for name in shards), shards
    assert all(math.isfinite(v) for v in losses(workspace / OUTPUT))


def test_two_nodes_on_loopback(workspace):
    recipe = workspace / RECIPE
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    args.update(max_steps=2)
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    port = str(free_port())

    def node(rank: int):
        env = {"NNODES": "2", "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        return caretune(workspace, "train", RECIPE, "--gpus", "1", env=env)

    second = node(1)  # the second node launches first: the first node must not take it for another run
    started = [second]
    try:
        deadline = time.monotonic() + 120
        while len(psutil.Process(second.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # its supervisor and llamafactory-cli started: a record it wrote would be there by now
        time.sleep(1)
        started.append(first := node(0))
        outputs = [finish(first), finish(second)]
    finally:  # a node left alone waits for its peer forever
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
    assert all("NNODES=2" in output for output in outputs)
    state = json.loads((workspace / OUTPUT / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert "Process rank: 0, world size: 2" in outputs[0] and "Process rank: 1, world size: 2" in outputs[1]
    manifest = json.loads(status_path(workspace / OUTPUT).read_text(encoding="utf-8"))
    assert manifest["state"] == "finished" and manifest["environment"]["switches"]["NODE_RANK"] == "0"  # the first node's


def trainers(workspace: Path, besides: int) -> list[int]:
    """Live processes other than `besides` working in `workspace`: llamafactory-cli, torchrun and its ranks (whose
    command lines name LLaMA-Factory's launcher and the recipe, not `train`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != besides:
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if (entry / "cwd").resolve() == workspace.resolve() and state != "Z":
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def test_sigterm_to_caretune_train_stops_the_training_and_records_it(workspace):
    recipe = workspace / RECIPE
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    args.update(max_steps=400, save_steps=1000)  # long enough to be stopped while it trains
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    parent = caretune(workspace, "train", RECIPE, "--stop-timeout", "20")
    log = workspace / OUTPUT / "trainer_log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.poll() is None and not log.exists():
        time.sleep(0.2)
    status_file = workspace / "saves/tiny-qwen3/lora/sft.run.json"
    assert parent.poll() is None and trainers(workspace, parent.pid), "training did not start"
    parent.send_signal(signal.SIGTERM)  # to caretune alone, as a scheduler or `kill` would
    output, _ = parent.communicate(timeout=60)
    assert parent.returncode != 0
    assert trainers(workspace, parent.pid) == [], output[-2000:]  # nothing trains on
    status = json.loads(status_file.read_text(encoding="utf-8"))
    assert status["state"] == "interrupted" and status["exit_code"] is not None


@pytest.mark.parametrize("gpus, kill", [("1", "caretune alone"), ("2", "its process group")])
def test_sigkill_to_caretune_train_leaves_no_trainer_within_30_s(workspace, gpus, kill):
    """SIGKILL to caretune train left llamafactory-cli training to the end (re-parented to PID 1); under torchrun,
    killing caretune's process group left a rank (in a session of its own) training while `runs` said interrupted."""
    from caretune.training.runs import read_run

    recipe = workspace / RECIPE
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    args.update(max_steps=400, save_steps=1000)
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    parent = caretune(workspace, "train", RECIPE, "--gpus", gpus, env={"MASTER_PORT": str(free_port())})
    log = workspace / OUTPUT / "trainer_log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.poll() is None and not log.exists():
        time.sleep(0.2)
    running = trainers(workspace, parent.pid)
    assert parent.poll() is None and len(running) >= (1 if gpus == "1" else 4), running  # cli (+ torchrun and 2 ranks)
    assert read_run(workspace / OUTPUT)["state"] == "running"
    if kill == "caretune alone":
        os.kill(parent.pid, signal.SIGKILL)
    else:
        os.killpg(parent.pid, signal.SIGKILL)
    parent.communicate(timeout=60)
    killed = time.monotonic()
    while trainers(workspace, parent.pid) and time.monotonic() - killed < 30:
        time.sleep(0.1)
    assert trainers(workspace, parent.pid) == [], "a trainer outlived caretune train"
    print(f"orphan window ({kill}, {gpus} process(es)): {time.monotonic() - killed:.2f} s")
    assert read_run(workspace / OUTPUT)["state"] == "interrupted"


def test_the_manifest_holds_no_secret_and_no_patient_text(workspace):
    data = workspace / "data" / "multi-med.json"
    rows = json.loads(data.read_text(encoding="utf-8"))
    question = "我的电话是13912345678，最近一直咳嗽怎么办"  # unmasked, as a user's own file could hold it
    rows.append({**rows[0], "instruction": question, "output": "建议多喝水，症状持续请就医。"})
    data.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    secrets = {"API_KEY": "sk-very-secret-value", "HF_TOKEN": "hf_secrettokenvalue"}
    finish(caretune(workspace, "train", RECIPE, env=secrets))
    text = (workspace / "saves/tiny-qwen3/lora/sft.run.json").read_text(encoding="utf-8")
    for value in (*secrets.values(), "13912345678", question, "建议多喝水"):
        assert value not in text, value
    manifest = json.loads(text)
    assert {"API_KEY", "HF_TOKEN"} <= set(manifest["environment"]["secrets_set"])
    assert manifest["state"] == "finished" and manifest["last_step"] == 4 and "adapter_model.safetensors" in manifest["outputs"]
    assert {d["name"] for d in manifest["datasets"]} >= {"multi-med", "huatuo2-sft"}
    assert manifest["packages"]["llamafactory"] and manifest["world_size"] == 1 and "train" in manifest["command"]["llamafactory"]
