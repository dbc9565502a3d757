"""`make gpu-kit`: the wheels an offline CUDA machine with its own PyTorch lacks for caretune's training path.

The list is not kept by hand: it is the requirement closure of what training needs of caretune's own requirements
(caretune.packages, read from pyproject.toml) as installed in the running environment (`.venv`), each pinned to the
version found there. Left out, each for a stated reason:
- PYTORCH and everything it requires: the machine's own CUDA build stays untouched;
- BASE, the scientific stack every CUDA PyTorch image carries (`gpu_check.sh` verifies it before
  installing; `--with-base` adds it for a bare machine, past the size cap);
- SERVING (WebUI, API, media, hub clients) and EVALUATION (BLEU/ROUGE), unless `--full`.
Wheels are fetched for the target's Python and platform; a package with only a source release is built
here and must come out pure Python (`py3-none-any`). A binary flash-attn wheel joins when the index has one for the
target within the cap; otherwise `kit.json` says why it is absent. `kit.json` lists every wheel with its version.

    python -m caretune.devtools.gpukit build DIR [--python 3.12] [--platform manylinux_2_28_x86_64] [--full]
    python -m caretune.devtools.gpukit verify DIR      # on the target: is the base present and new enough?
    python -m caretune.devtools.gpukit bare DIR        # for the dry run: a venv with only PyTorch, the base and pip
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.packages import EVALUATION, FLASH_ATTN, GPU_EXTRA, canonical, closure, requirements, training_packages

KIT_MANIFEST = "kit.json"
MAX_KIT_MIB = 60  # the core kit's size cap (FULL and --with-base may exceed it)
PYTORCH = ("torch", "torchvision", "torchaudio", "triton")
BASE = ("numpy", "pandas", "pyarrow", "scipy", "matplotlib")
SERVING = {
    "gradio": "the WebUI",
    "fastapi": "the API",
    "uvicorn": "the API",
    "sse-starlette": "the API's streaming",
    "av": "audio and video inputs",
    "modelscope": "downloads from ModelScope (an offline machine has none)",
    "hf-transfer": "fast hub downloads (an offline machine has none)",
}
DEFAULT_PYTHON = "3.12"
# pip matches manylinux tags exactly: offer every glibc baseline a current wheel may name
DEFAULT_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux1_x86_64",
)


class KitError(UserError):
    """The kit cannot be built or installed as asked; the message says why."""


def installed_closure(roots, stop: set[str]) -> dict[str, str]:
    """packages.closure, a missing distribution named as a KitError."""
    from importlib.metadata import PackageNotFoundError

    try:
        return closure(roots, stop)
    except PackageNotFoundError as err:
        raise KitError(f"{err} is required but not installed in {sys.prefix}; run `make setup` first") from None


def plan_kit(full: bool = False, with_base: bool = False) -> dict:
    """What goes into the kit: {"packages": {name: version}, "left_out": {name: reason}, "base": {name: spec}}."""
    pytorch = set(installed_closure(["torch"], set())) | set(PYTORCH)
    stop = set(pytorch) | (set() if with_base else set(BASE)) | (set() if full else set(SERVING))
    roots = training_packages() + (EVALUATION if full else ())
    packages = {**installed_closure(roots, stop), **gpu_extra_pins()}
    reachable = installed_closure(roots, set(PYTORCH) - {"torch"})
    left_out = {}
    for name in sorted(set(reachable) - set(packages)):
        if name in pytorch:
            left_out[name] = "PyTorch and its requirements: the machine's own build is kept"
        elif name in BASE:
            left_out[name] = "scientific base of a CUDA PyTorch image (verified on the target)"
        elif name in SERVING:
            left_out[name] = f"only for {SERVING[name]} (make gpu-kit FULL=1)"
        else:
            left_out[name] = "only required by packages left out"
    installed = {name: version for name, version in packages.items() if name not in gpu_extra_pins()}
    base = {} if with_base else {name: base_specifier(name, installed) for name in BASE}
    return {"packages": dict(sorted(packages.items())), "left_out": left_out, "base": base}


def gpu_extra_pins() -> dict[str, str]:
    """The packages of caretune's GPU extra, at their pinned versions (they cannot be installed on a CPU machine)."""
    pins = {}
    for requirement in requirements("caretune", GPU_EXTRA):
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(exact) != 1:
            raise KitError(f"caretune's {GPU_EXTRA!r} extra must pin {requirement.name} with ==")
        pins[canonical(requirement.name)] = exact[0]
    return pins


def base_specifier(name: str, packages: dict[str, str]) -> str:
    """The version range the kit's packages ask of one base package (',' joined; '' for any)."""
    specs = set()
    for package in packages:
        for requirement in requirements(package):
            if canonical(requirement.name) == name and str(requirement.specifier):
                specs.add(str(requirement.specifier))
    return ",".join(sorted(specs))


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], check=False, capture_output=True, text=True)


def _same_interpreter(python: str) -> bool:
    return python == f"{sys.version_info.major}.{sys.version_info.minor}"


def _target_args(python: str, platforms: tuple[str, ...]) -> list[str]:
    """`pip download` options that select wheels for the target (none when it is this interpreter)."""
    if _same_interpreter(python):
        return []
    abi = f"cp{python.replace('.', '')}"
    platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
    return ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none", *platform_args]


def fetch(packages: dict[str, str], target: Path, python: str, platforms: tuple[str, ...]) -> None:
    """Wheels of every package for the target; a source-only release is built here and must be pure Python."""
    pins = [f"{name}=={version}" for name, version in packages.items()]
    same_interpreter = _same_interpreter(python)
    result = _pip("download", "--quiet", "--no-deps", "--dest", str(target), *_target_args(python, platforms), *pins)
    if result.returncode != 0:
        raise KitError("pip could not download the kit: " + (result.stderr.strip().splitlines() or ["?"])[-1])
    for sdist in [p for p in target.iterdir() if p.name.endswith((".tar.gz", ".zip"))]:
        with tempfile.TemporaryDirectory() as built:
            result = _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", built, str(sdist))
            wheels = list(Path(built).glob("*.whl"))
            if result.returncode != 0 or len(wheels) != 1:
                raise KitError(f"{sdist.name}: building a wheel failed: " + (result.stderr.strip().splitlines() or ["?"])[-1])
            if not wheels[0].name.endswith("-none-any.whl") and not same_interpreter:
                raise KitError(f"{sdist.name} has no wheel for Python {python} and is not pure Python")
            shutil.move(str(wheels[0]), target / wheels[0].name)
        sdist.unlink()


def flash_attn_wheel(target: Path, python: str, platforms: tuple[str, ...], room_bytes: int) -> dict:
    """A binary flash-attn wheel for the target from the package index, when one exists and fits in `room_bytes`:
    {"wheel": its file name}, or {"absent": why not}. Whether it matches the target's torch and CUDA shows only
    there: `caretune bench` skips FlashAttention-2 with the import error when it does not."""
    with tempfile.TemporaryDirectory() as scratch:
        result = _pip(
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            scratch,
            *_target_args(python, platforms),
            FLASH_ATTN,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if result.returncode == 0 and wheels:
            size = wheels[0].stat().st_size
            if size > room_bytes:
                return {
                    "absent": f"{wheels[0].name} is {size / 2**20:.0f} MiB, more than the {room_bytes / 2**20:.0f} MiB "
                    f"left under the kit's {MAX_KIT_MIB} MiB cap"
                }
            shutil.move(str(wheels[0]), target / wheels[0].name)
            return {"wheel": wheels[0].name}
    listed = _pip("index", "versions", FLASH_ATTN)
    found = [line for line in listed.stdout.splitlines() if line.lower().startswith(FLASH_ATTN)]
    if listed.returncode != 0 or not found:
        return {"absent": f"the package index has no {FLASH_ATTN}"}
    return {
        "absent": f"the package index lists {found[0].strip()} but no wheel of it for CPython {python} on "
        f"{platforms[0] if platforms else 'this platform'}: building one needs the CUDA compiler and the target's "
        "torch, and flash-attn's setup downloads prebuilt wheels from GitHub, which an offline machine cannot reach"
    }


def wheel_versions(directory: Path) -> dict[str, str]:
    """name -> version from the wheel file names in a folder."""
    versions = {}
    for wheel in directory.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        versions[canonical(name)] = version
    return versions


def build(
    target: Path,
    *,
    python: str = DEFAULT_PYTHON,
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS,
    full: bool = False,
    with_base: bool = False,
    log=print,
) -> dict:
    """Write the kit into target (replacing it) and return its manifest."""
    kit = plan_kit(full=full, with_base=with_base)
    log(f"gpu-kit: {len(kit['packages'])} packages for CPython {python}; left out: {', '.join(kit['left_out'])}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fetch(kit["packages"], staging, python, platforms)
        got = wheel_versions(staging)
        if got != kit["packages"]:
            differ = sorted(set(got.items()) ^ set(kit["packages"].items()))
            raise KitError(f"the wheels do not match the environment: {differ}")
        size = sum(p.stat().st_size for p in staging.glob("*.whl"))
        cap = not (full or with_base)
        if cap and size > MAX_KIT_MIB * 2**20:
            raise KitError(f"the kit is {size / 2**20:.1f} MiB, over its {MAX_KIT_MIB} MiB cap")
        flash_attn = flash_attn_wheel(staging, python, platforms, MAX_KIT_MIB * 2**20 - size if cap else 2**40)
        log(f"gpu-kit: flash-attn: {flash_attn.get('wheel') or 'absent: ' + flash_attn['absent']}")
        size = sum(p.stat().st_size for p in staging.glob("*.whl"))
        manifest = {
            "python": python,
            "platforms": list(platforms),
            "full": full,
            "with_base": with_base,
            "size_bytes": size,
            **kit,
            "flash_attn": flash_attn,
            "wheels": sorted(p.name for p in staging.glob("*.whl")),
        }
        (staging / KIT_MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"gpu-kit: {target}: {len(manifest['wheels'])} wheels, {size / 2**20:.1f} MiB")
    return manifest


def verify_base(kit_dir: Path) -> list[str]:
    """On the target: the base packages the kit leaves out that are missing or too old here (empty: all good)."""
    from importlib.metadata import PackageNotFoundError, version

    manifest = json.loads((kit_dir / KIT_MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for name, spec in manifest["base"].items():
        try:
            found = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed (the kit needs {name}{spec or ''})")
            continue
        if spec:
            from packaging.specifiers import SpecifierSet

            if found not in SpecifierSet(spec, prereleases=True):
                problems.append(f"{name} {found} is installed; the kit needs {name}{spec}")
    return problems


def bare_environment(target: Path) -> Path:
    """A virtual environment holding only what a CUDA PyTorch machine has (PyTorch, BASE, pip), linked from
    this one: the dry run of `gpu_check.sh` installs the kit into it, so a package missing from the kit fails
    there as it would on the target. Returns its Python."""
    import sysconfig
    import venv
    from importlib.metadata import distribution

    shutil.rmtree(target, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    python = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    here = Path(sysconfig.get_paths()["purelib"])
    for name in installed_closure(("torch", "pip", *BASE), set()):
        for top in {file.parts[0] for file in distribution(name).files or [] if file.parts[0] != ".."}:
            source, link = here / top, site / top
            if source.exists() and not link.exists() and not top.endswith(".pth"):
                link.symlink_to(source)
    return python


def main(argv: list[str] | None = None) -> int:
    """`python -m caretune.devtools.gpukit build|bare`: write the kit, or a bare venv to test it in."""
    parser = argparse.ArgumentParser(prog="python -m caretune.devtools.gpukit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="write the kit into DIR")
    build_parser.add_argument("dir", type=Path)
    build_parser.add_argument("--python", default=DEFAULT_PYTHON, help="target CPython version (X.Y)")
    build_parser.add_argument("--platform", action="append", help="target platform tag (repeatable)")
    build_parser.add_argument("--full", action="store_true", help="add the WebUI, API and BLEU/ROUGE packages")
    build_parser.add_argument("--with-base", action="store_true", help="add numpy, pandas, pyarrow, scipy, matplotlib")
    verify_parser = commands.add_parser("verify", help="check this machine's base packages against the kit in DIR")
    verify_parser.add_argument("dir", type=Path)
    bare_parser = commands.add_parser("bare", help="a venv in DIR with only PyTorch, the base and pip (for the dry run)")
    bare_parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "bare":
            print(bare_environment(args.dir))
            return 0
        if args.command == "build":
            build(
                args.dir,
                python=args.python,
                platforms=tuple(args.platform or DEFAULT_PLATFORMS),
                full=args.full,
                with_base=args.with_base,
            )
            return 0
        problems = verify_base(args.dir)
    except KitError as err:
        print(f"gpu-kit: error: {err}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"gpu-kit: {problem}; rebuild the kit with `make gpu-kit BASE=1`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
