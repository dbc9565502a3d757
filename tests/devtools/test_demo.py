"""`make demo`: every stage runs on the shipped sample, each prints one line, each full log lands in saves/demo/."""

import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, caretune_env, run_caretune

pytestmark = pytest.mark.slow


def test_the_demo_prints_one_line_per_stage_and_keeps_the_logs(tmp_path):
    shutil.copytree(ROOT / "data" / "sample", tmp_path / "data" / "sample")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    shutil.copy(ROOT / "dataset_info.json", tmp_path)
    (tmp_path / "caretune" / "data").mkdir(parents=True)  # the registry's medical-emergency entry points there
    shutil.copy(ROOT / "caretune" / "data" / "emergency_prompts.json", tmp_path / "caretune" / "data")
    shutil.copy(ROOT / ".gitignore", tmp_path)
    for git in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"]):
        subprocess.run(["git", *git], cwd=tmp_path, check=True, capture_output=True)  # a checkout, as the README's
    done = subprocess.run(
        [sys.executable, "-m", "caretune.devtools.demo"],
        cwd=tmp_path,
        env=caretune_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    stages = [line for line in done.stdout.splitlines() if line.startswith("[")]
    names = [
        "convert chatmed",
        "convert huatuo",
        "check",
        "plan",
        "tiny model",
        "train",
        "eval",
        "eval base",
        "mcq",
        "mcq base",
        "report",
        "chat",
    ]
    assert [line.split("]")[1].split("  ")[0].strip() for line in stages] == names
    assert len(done.stdout.splitlines()) < 25  # a screenful, not LLaMA-Factory's progress bars
    assert "loss " in stages[5] and "bleu-4" in stages[6] and "bleu-4" in stages[7] and "no <think> block" in stages[11]
    assert "medical overall" in stages[8] and "general overall" in stages[9]
    logs = sorted(p.name for p in (tmp_path / "saves" / "demo").glob("*.log"))
    assert len(logs) == 12 and (tmp_path / "saves" / "demo" / "plan.json").exists()
    report = (tmp_path / "saves" / "tiny-qwen3" / "report" / "report.md").read_text(encoding="utf-8")
    metrics = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    for row in ("BLEU-4", "ROUGE-L", "advise seeing a doctor", "share of answers cut at max_new_tokens"):
        cells = [cell.strip() for cell in metrics[row].strip("|").split("|")[1:]]
        assert len(cells) == 2 and "–" not in cells, metrics[row]  # base and tuned, both measured
    assert "| template | qwen3 | qwen3 |" in report and "| enable_thinking | False | False |" in report
    assert "## Medical gain and general cost" in report and "| general | 20 |" in report  # base against tuned, paired
    for path in ("data/multi-med.card.md", "saves/tiny-qwen3/lora/sft/training_loss.png", "saves/tiny-qwen3/report/report.md"):
        assert (tmp_path / path).exists(), path

    run = "saves/tiny-qwen3/lora/sft"
    verified = run_caretune(tmp_path, "runs", "verify", run)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    data = tmp_path / "data" / "multi-med.json"
    data.write_bytes(data.read_bytes().replace(b"[", b" [", 1))  # one byte more
    changed = run_caretune(tmp_path, "runs", "verify", run)
    assert changed.returncode == 1 and "data/multi-med.json" in changed.stderr, changed.stderr
