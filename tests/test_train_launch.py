"""How `caretune train` launches LLaMA-Factory: torchrun, multi-node pass-through, Ray."""

from pathlib import Path

import pytest

from caretune.training.preflight import LaunchPlan, PreflightError, check_ray
from caretune.training.train import command, launch_env


def plan(processes=1, **args):
    return LaunchPlan(recipe=Path("recipes/tiny-qwen3/lora_sft.yaml"), args=args, processes=processes)


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
