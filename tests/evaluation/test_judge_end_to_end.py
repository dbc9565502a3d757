"""`caretune judge` end to end on CPU: the tiny Qwen3 trained with a LoRA adapter, base and adapter answering, judged
over real HTTP by a scripted grader (so verdicts parse and the cache is exercised), then `caretune report` side by
side; and `caretune api` serving the tiny model as the judge, whose noise never parses: that run exits 1, caches
nothing and still writes its verdicts for a look."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.helpers import ROOT, converted_workspace, free_port, read_json, run_caretune, start_caretune, tiny_recipe
from tests.scripted_judge import ScriptedJudge, keyword_rubric, section

pytestmark = [pytest.mark.slow, pytest.mark.lf]  # lf: the workspace fits its rows with LLaMA-Factory's template

RUBRICS = ROOT / "tests" / "data" / "judge" / "healthbench_hand.jsonl"


def wait_for_api(url: str, process, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("caretune api did not start")


def test_base_against_adapter_judged_by_caretune_api(tmp_path):
    converted_workspace(tmp_path)
    for task in ("lora_sft", "predict", "chat"):
        changes = {"max_steps": 4, "save_steps": 4} if task == "lora_sft" else {"max_new_tokens": 16}
        tiny_recipe(tmp_path, task, tmp_path / f"recipes/tiny-qwen3/{task}.yaml", **changes)
    for task in ("predict", "chat"):  # the adapter lora_sft.yaml trains
        path = tmp_path / f"recipes/tiny-qwen3/{task}.yaml"
        path.write_text(path.read_text(encoding="utf-8") + "adapter_name_or_path: saves/tiny-qwen3/lora/sft\n", encoding="utf-8")
    trained = run_caretune(tmp_path, "train", "recipes/tiny-qwen3/lora_sft.yaml", timeout=900)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]

    def grader(content: str, number: int) -> str:  # rubric: keyword; pairwise: the longer answer
        if "<criterion" in content:
            return keyword_rubric(content, number)
        a, b = len(section(content, "answer_A")), len(section(content, "answer_B"))
        return json.dumps({"winner": "A" if a > b else "B" if b > a else "tie", "explanation": "scripted"})

    with ScriptedJudge(grader) as scripted:
        judge = ["--judge-url", scripted.url, "--judge-model", "scripted", "--concurrency", "2", "--timeout", "60"]
        for base in (["--base"], []):
            done = run_caretune(
                tmp_path, "judge", "rubric", RUBRICS, "--recipe", "recipes/tiny-qwen3/predict.yaml", *base, *judge, timeout=900
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            assert "rubric: score" in done.stdout
        pair = run_caretune(
            tmp_path,
            "judge",
            "pairwise",
            "saves/tiny-qwen3/base/predict.yaml",
            "recipes/tiny-qwen3/predict.yaml",
            "--sample",
            "3",
            *judge,
            timeout=900,
        )
        assert pair.returncode == 0, pair.stdout[-2000:] + pair.stderr[-2000:]
        assert "length-controlled" in pair.stdout
        rerun = run_caretune(
            tmp_path, "judge", "rubric", RUBRICS, "--recipe", "recipes/tiny-qwen3/predict.yaml", *judge, timeout=900
        )
        assert rerun.returncode == 0 and "0 calls, 9 cached" in rerun.stdout, rerun.stdout + rerun.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = start_caretune(tmp_path, "api", "recipes/tiny-qwen3/chat.yaml", "--port", str(port))
    try:
        wait_for_api(url, server)
        noisy = ["--judge-url", url, "--judge-model", "caretune", "--judge-max-tokens", "32", "--cache-dir", "noise-cache"]
        done = run_caretune(
            tmp_path,
            "judge",
            "rubric",
            RUBRICS,
            "--answers",
            ROOT / "tests/data/judge/healthbench_hand_answers.jsonl",
            *noisy,
            "--out",
            "noise",
            timeout=900,
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert done.returncode == 1 and "the judge gave no usable verdict (9 unparsed, 0 failed of 9)" in done.stderr, done.stderr
    assert len((tmp_path / "noise" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()) == 9
    cache = tmp_path / "noise-cache" / "caretune.jsonl"
    assert not cache.exists() or not cache.read_text(encoding="utf-8").strip()  # nothing cached

    for run in ("base", "lora"):
        report = read_json(tmp_path / f"saves/tiny-qwen3/{run}/judge/healthbench_hand/judge.json")
        verdicts = (tmp_path / f"saves/tiny-qwen3/{run}/judge/healthbench_hand/verdicts.jsonl").read_text(encoding="utf-8")
        assert len(verdicts.splitlines()) == 9
        assert report["calls"] + report["cached"] >= 9 and report["unparsed"] == 0
        assert all(not json.loads(v)["unparsed"] for v in verdicts.splitlines())
        answers = (tmp_path / f"saves/tiny-qwen3/{run}/judge/healthbench_hand/answers.jsonl").read_text(encoding="utf-8")
        assert len(answers.splitlines()) == 3
    lora = read_json(tmp_path / "saves/tiny-qwen3/lora/judge/healthbench_hand/judge.json")
    manifest = tmp_path / "saves/tiny-qwen3/lora/sft.run.json"
    assert lora["trained_by"]["manifest"] == "saves/tiny-qwen3/lora/sft.run.json"  # a figure traces to its run
    assert lora["trained_by"]["sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert read_json(tmp_path / "saves/tiny-qwen3/base/judge/healthbench_hand/judge.json")["trained_by"] is None
    pairwise = read_json(tmp_path / "saves/tiny-qwen3/lora/judge/pairwise/judge.json")
    assert pairwise["sample"] == 3 and pairwise["judged"] <= 3
    assert pairwise["win"] + pairwise["tie"] + pairwise["loss"] == pairwise["judged"]

    reported = run_caretune(tmp_path, "report", "saves/tiny-qwen3/base", "saves/tiny-qwen3/lora", "--out", "report", timeout=300)
    assert reported.returncode == 0, reported.stderr
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "Rubric set `healthbench_hand`, judged by scripted:" in text and "Pairwise, `recipes/tiny-qwen3/predict.yaml`" in text
    assert "was trained by the run whose manifest is `saves/tiny-qwen3/lora/sft.run.json`" in text
