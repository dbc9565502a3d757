"""`make setup`: create the virtual environment caretune runs in (standard library only: it runs before the
environment exists).

    python3 caretune/devtools/setup_venv.py --venv .venv --torch 2.13.0 [--torch-index URL]

1. torch first, at the given version (the CUDA build where `nvidia-smi` sees a GPU, the CPU build otherwise,
   or from --torch-index), then pinned with a pip constraint so no later install swaps in another build;
2. caretune with its test dependencies and Ray (the `ray` extra), editable;
3. LLaMA-Factory depends on torchvision and torchaudio, and PyPI's wheels of both can be CUDA builds that do
   not import next to a CPU torch. Text training never uses torchvision, so one that does not import is
   removed; LLaMA-Factory imports torchaudio at module level, so one that does not import is replaced by
   caretune/stubs/torchaudio (audio inputs then fail with a clear error);
4. the imports caretune needs are checked and their versions printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB_PTH = "caretune-torchaudio-stub.pth"


def say(text: str) -> None:
    """A setup message."""
    print(f"setup: {text}", flush=True)


def run(*command: str) -> None:
    """Run a command; stop setup if it fails."""
    subprocess.run(command, check=True)


def imports(python: Path, module: str) -> bool:
    """Whether `module` imports in the venv."""
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def installed(python: Path, package: str) -> bool:
    """Whether pip lists `package` in the venv."""
    return subprocess.run([str(python), "-m", "pip", "show", "--quiet", package], capture_output=True).returncode == 0


def has_gpu() -> bool:
    """Whether nvidia-smi sees a GPU."""
    return bool(shutil.which("nvidia-smi")) and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def site_packages(python: Path) -> Path:
    """The venv's site-packages folder."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def main() -> int:
    """Create and fill the venv (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(".venv"))
    parser.add_argument("--torch", required=True, help="torch version, e.g. 2.13.0")
    parser.add_argument("--torch-index", default=None, help="package index for torch, e.g. https://download.pytorch.org/whl/cpu")
    args = parser.parse_args()
    venv = args.venv.resolve()
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet"]

    say(f"creating {args.venv} with Python {sysconfig.get_python_version()}")
    run(sys.executable, "-m", "venv", str(venv))
    run(*pip, "--upgrade", "pip")
    gpu = has_gpu()
    say(
        f"{'GPU found' if gpu else 'no GPU'}: installing torch=={args.torch} "
        f"({'CUDA' if gpu else 'CPU'} build{', from ' + args.torch_index if args.torch_index else ''})"
    )
    run(*pip, f"torch=={args.torch}", *(["--index-url", args.torch_index] if args.torch_index else []))
    version = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={version}\n", encoding="utf-8")
    (venv / "pip.conf").write_text(f"[install]\nconstraint = {constraints}\n", encoding="utf-8")
    say(f"pinned torch=={version} in {args.venv}/pip.conf")
    run(*pip, "-e", f"{ROOT}[test,ray]")

    if installed(python, "torchvision") and not imports(python, "torchvision"):
        say("torchvision does not import next to this torch: removing it (text training never needs it)")
        run(str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision")
    stub = site_packages(python) / STUB_PTH
    stub.unlink(missing_ok=True)
    if not imports(python, "torchaudio"):
        say("torchaudio does not import next to this torch: removing it and using caretune/stubs/torchaudio")
        say("  (LLaMA-Factory imports it at module level; audio inputs would fail with a clear error)")
        if installed(python, "torchaudio"):
            run(str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchaudio")
        stub.write_text(f"{ROOT / 'caretune' / 'stubs'}\n", encoding="utf-8")

    check = (
        "import llamafactory.data, deepspeed, jieba, nltk, rouge_chinese, torch; "
        "print('setup: LLaMA-Factory', __import__('llamafactory').__version__, '| torch', torch.__version__, "
        "'| deepspeed', deepspeed.__version__)"
    )
    run(str(python), "-c", check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
