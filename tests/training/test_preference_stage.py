"""The preference stage end to end on CPU: a tiny SFT run, `caretune prefs build` judged over real HTTP by a scripted
grader, `caretune check` reading the pairs through LLaMA-Factory's pairwise path, a tiny DPO run whose reference is
the SFT model (and the trap beside it), pairwise SFT against SFT+DPO, `runs verify` and the report."""

from __future__ import annotations

import json

import pytest

from caretune.lf import cli_command
from caretune.training.runs import status_path
from tests.helpers import SAMPLE, caretune_env, converted_workspace, edit_recipe, read_json, run_caretune
from tests.scripted_judge import ScriptedJudge, section

pytestmark = [pytest.mark.slow, pytest.mark.lf]

LN2 = 0.6931  # the DPO loss of a policy equal to its reference: -log sigmoid(0)


def longer_wins(content: str, _: int) -> str:
    """A grader that likes length (as judges do): the longer answer wins in either position."""
    a, b = len(section(content, "answer_A")), len(section(content, "answer_B"))
    return json.dumps({"winner": "A" if a > b else "B" if b > a else "tie", "explanation": "scripted"})


def ok(done) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def step_one(output_dir) -> dict:
    return read_json(output_dir / "trainer_state.json")["log_history"][0]


def test_sft_then_onpolicy_pairs_then_dpo_with_the_sft_model_as_reference(tmp_path):
    import subprocess

    converted_workspace(tmp_path)
    (tmp_path / ".gitignore").write_text("saves/\n.cache/\ndata/\n", encoding="utf-8")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True, capture_output=True)
    ok(run_caretune(tmp_path, "tiny-model"))
    edit_recipe(tmp_path / "recipes/tiny-qwen3/lora_sft.yaml", max_steps=8, save_steps=8)
    edit_recipe(tmp_path / "recipes/tiny-qwen3/dpo.yaml", max_steps=4, save_steps=4)
    ok(run_caretune(tmp_path, "train", "recipes/tiny-qwen3/lora_sft.yaml", timeout=900))
    ok(run_caretune(tmp_path, "convert", "prefs", SAMPLE / "prefs_med_sample.jsonl", "--eval-size", "2"))

    build = ["prefs", "build", "recipes/tiny-qwen3/dpo.yaml", "--sample", "6", "--candidates", "3", "--max-new-tokens", "24"]
    with ScriptedJudge(longer_wins) as judge:
        endpoint = ["--judge-url", judge.url, "--judge-model", "scripted", "--concurrency", "2"]
        done = run_caretune(tmp_path, *build, *endpoint, timeout=900)
        assert "6 prompts x 3 answers; the judge is asked 36 times" in done.stderr
        ok(done)
        assert judge.calls == 36  # K(K-1) a prompt: every pair in both orders
        again = ok(run_caretune(tmp_path, *build, *endpoint, timeout=900))
        assert judge.calls == 36 and "0 calls, 36 cached" in again  # the same answers, every verdict cached
    report = read_json(tmp_path / "data/prefs-onpolicy.build.json")
    assert report["prompts_tried"] == 6 and report["pairs_kept"] + sum(report["prompts_skipped"].values()) == 6
    assert report["pair_verdicts"]["inconsistent"] == 0 and report["judge"]["model"] == "scripted"
    assert report["length_chars"]["chosen_longer_share"] == 1.0  # a length-loving judge teaches length, and says so
    assert report["tie_rate"]["prompts_sft_trained_on_count"] == 0  # prefs-med is deduped against the SFT sets
    pairs = read_json(tmp_path / "data/prefs-onpolicy.json")
    assert all(len(p["chosen"]["value"]) > len(p["rejected"]["value"]) for p in pairs) and all(
        "<think>" not in json.dumps(p) for p in pairs
    )

    checked = json.loads(
        ok(run_caretune(tmp_path, "check", "prefs-onpolicy", "prefs-med", "--cutoff-len", "512", "--json", timeout=600))
    )
    for result in checked:  # LLaMA-Factory's pairwise path: no pair dropped
        assert result["rows"] > 0 and result["dropped"] == 0 and result["tokens"]["max"] > 0, result

    ok(run_caretune(tmp_path, "train", "recipes/tiny-qwen3/dpo.yaml", timeout=900))
    dpo = tmp_path / "saves/tiny-qwen3/lora-dpo/dpo"
    first = step_one(dpo)
    assert round(first["loss"], 4) == LN2 and first["rewards/margins"] == 0.0  # the reference is the SFT model
    log = [json.loads(line) for line in (dpo / "trainer_log.jsonl").read_text().splitlines()]
    assert all("accuracy" in entry for entry in log if "loss" in entry)
    assert (dpo / "adapter_model.safetensors").is_file()
    assert "adapters" in ok(run_caretune(tmp_path, "runs", "verify", str(dpo)))
    (adapter,) = read_json(status_path(dpo))["adapters"]  # the SFT adapter it started from, and the run behind it
    assert adapter["path"] == "saves/tiny-qwen3/lora/sft" and adapter["trained_by"]["manifest"].endswith("sft.run.json")

    # the trap: resuming the SFT adapter makes the reference the base model; LLaMA-Factory trains it without a word
    trap = edit_recipe(
        tmp_path / "recipes/tiny-qwen3/dpo.yaml",
        tmp_path / "trap.yaml",
        create_new_adapter=None,
        max_steps=1,
        output_dir="saves/trap",
    )
    refused = run_caretune(tmp_path, "preflight", trap)
    assert refused.returncode == 1 and "without create_new_adapter" in refused.stderr
    subprocess.run(
        [*cli_command(), "train", str(trap)], cwd=tmp_path, env=caretune_env(), capture_output=True, check=True, timeout=900
    )
    trapped = step_one(tmp_path / "saves/trap")
    assert trapped["rewards/margins"] != 0.0 and round(trapped["loss"], 4) != LN2

    with ScriptedJudge(longer_wins) as judge:
        endpoint = ["--judge-url", judge.url, "--judge-model", "scripted", "--concurrency", "2"]
        for task in ("predict", "predict_dpo"):
            edit_recipe(tmp_path / f"recipes/tiny-qwen3/{task}.yaml", max_new_tokens=16)
        pairwise = ok(
            run_caretune(
                tmp_path,
                "judge",
                "pairwise",
                "recipes/tiny-qwen3/predict.yaml",
                "recipes/tiny-qwen3/predict_dpo.yaml",
                "--sample",
                "4",
                *endpoint,
                timeout=900,
            )
        )
    assert "pairwise: tuned vs base over 4/4" in pairwise
    judged = read_json(tmp_path / "saves/tiny-qwen3/lora-dpo/judge/pairwise/judge.json")
    assert judged["base"].endswith("predict.yaml") and judged["tuned"].endswith("predict_dpo.yaml")
    ok(run_caretune(tmp_path, "report", "saves/tiny-qwen3/lora", "saves/tiny-qwen3/lora-dpo", "--out", "saves/report", timeout=600))
    text = (tmp_path / "saves/report/report.md").read_text(encoding="utf-8")
    assert "Runs: `saves/tiny-qwen3/lora`, `saves/tiny-qwen3/lora-dpo`" in text  # SFT beside SFT+DPO
    assert "Pairwise, `recipes/tiny-qwen3/predict_dpo.yaml` against `recipes/tiny-qwen3/predict.yaml`" in text

    sft_config = tmp_path / "saves/tiny-qwen3/lora/sft/adapter_config.json"  # the SFT adapter changed after DPO started
    sft_config.write_text(sft_config.read_text(encoding="utf-8") + " ", encoding="utf-8")
    changed = run_caretune(tmp_path, "runs", "verify", str(dpo))
    assert changed.returncode == 1 and "starting adapter" in changed.stderr and "adapter_config.json" in changed.stderr
