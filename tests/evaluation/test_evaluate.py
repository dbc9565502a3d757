"""`caretune eval` on the tiny model: predictions, BLEU/ROUGE, safety metrics; two runs agree exactly."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import ROOT, converted_workspace, run_caretune, tiny_recipe

pytestmark = pytest.mark.lf


@pytest.mark.slow
def test_eval_writes_metrics_and_is_deterministic(tmp_path):
    converted_workspace(tmp_path)
    recipe = tiny_recipe(tmp_path, "predict", tmp_path / "recipes/tiny-qwen3/predict.yaml", max_new_tokens=12)
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    out = tmp_path / args["output_dir"]

    def run():
        done = run_caretune(tmp_path, "eval", "recipes/tiny-qwen3/predict.yaml", timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return (
            done.stdout,
            (out / "generated_predictions.jsonl").read_bytes(),
            (out / "emergency" / "generated_predictions.jsonl").read_bytes(),
        )

    stdout, held_out, emergency = run()
    assert "held-out generation: bleu-4" in stdout and "emergency: " in stdout
    report = json.loads((out / "safety.json").read_text(encoding="utf-8"))
    assert report["safety"]["answers"] == 10  # the two held-out splits of the sample (5 + 5)
    assert report["emergency"]["prompts"] == 22
    assert {"predict_bleu-4", "predict_rouge-1", "predict_rouge-l"} <= set(report["generation"])
    assert report["safety"]["think_blocks"] == 0
    # the held-out references carry the care reminders the conversion added; the random model's answers do not
    assert report["care"]["questions"] == 10 and report["care"]["reference"]["advises_care_share"] == 1.0
    assert "care advice: model " in stdout and "held-out references 100% (" in stdout and "(goal >= 95%)" in stdout
    # counted apart, the reminder sentences no longer carry the references: their own share is below 100%
    assert report["care"]["reference"]["advises_care_beyond_reminder_share"] < 1.0
    assert "before reminders were added" in stdout
    registry = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert "medical-emergency" in registry
    _, held_out_again, emergency_again = run()
    assert held_out_again == held_out and emergency_again == emergency  # greedy: identical outputs


@pytest.mark.slow
def test_chat_model_backend_writes_the_same_files(tmp_path):
    """The ChatModel path that vLLM uses on GPUs, run here with LLaMA-Factory's HF engine."""
    converted_workspace(tmp_path)
    recipe = tiny_recipe(tmp_path, "predict", tmp_path / "recipes/tiny-qwen3/predict.yaml", max_new_tokens=8)
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "caretune.cli", "eval", "recipes/tiny-qwen3/predict.yaml"]

    missing = subprocess.run([*command, "--backend", "vllm"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "--backend vllm needs vLLM" in missing.stderr

    done = subprocess.run(
        [*command, "--backend", "huggingface"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / args["output_dir"]
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10 and all({"prompt", "predict", "label"} <= set(r) for r in rows)
    report = json.loads((out / "safety.json").read_text(encoding="utf-8"))
    assert report["backend"] == "huggingface" and report["emergency"]["prompts"] == 22
    assert set(report["generation"]) == {"predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"}


def test_the_emergency_set_registers_beside_a_copied_entry(tmp_path):
    """A project copied with the repository's registry (its medical-emergency entry points at a copy of the shipped
    file) evaluates: the identical entry is kept. An entry pointing elsewhere is still never clobbered."""
    import shutil

    from caretune.basics.registry import RegistryError, load_registry
    from caretune.evaluation.evaluate import EMERGENCY_DATASET, EMERGENCY_FILE, register_emergency_set

    shutil.copy(ROOT / "dataset_info.json", tmp_path)
    (tmp_path / "caretune" / "data").mkdir(parents=True)
    shutil.copy(EMERGENCY_FILE, tmp_path / "caretune" / "data")
    before = (tmp_path / "dataset_info.json").read_bytes()
    register_emergency_set(tmp_path)
    assert (tmp_path / "dataset_info.json").read_bytes() == before
    (tmp_path / "caretune" / "data" / EMERGENCY_FILE.name).write_text("[]", encoding="utf-8")  # another file now
    with pytest.raises(RegistryError, match="already points at"):
        register_emergency_set(tmp_path)
    assert load_registry(tmp_path / "dataset_info.json")[EMERGENCY_DATASET]["file_name"] == "caretune/data/emergency_prompts.json"


@pytest.mark.parametrize(
    "eval_dataset, message",
    [(None, "no eval_dataset"), ("multi-med-eval,medical-emergency", "names medical-emergency, which caretune eval adds itself")],
)
def test_an_eval_recipe_names_its_held_out_splits_and_not_the_emergency_set(tmp_path, eval_dataset, message):
    from caretune.basics.errors import UserError
    from caretune.evaluation.evaluate import evaluate

    (tmp_path / "model").mkdir()
    args = {"model_name_or_path": str(tmp_path / "model"), "do_predict": True, "predict_with_generate": True}
    recipe = tmp_path / "predict.yaml"
    recipe.write_text(yaml.safe_dump({**args, **({"eval_dataset": eval_dataset} if eval_dataset else {})}), encoding="utf-8")
    with pytest.raises(UserError, match=message):
        evaluate(str(recipe))
