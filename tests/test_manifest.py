"""The run manifest: secrets by name only, hashes that notice a changed byte, package versions, and the
`caretune runs show` / `runs verify` commands on a hand-made run."""

from __future__ import annotations

import json

from click.testing import CliRunner

from caretune.cli import main
from caretune.training import manifest, runs


def test_secrets_are_listed_by_name_only():
    env = {"API_KEY": "s3cret-value", "HF_TOKEN": "hf_abc", "JUDGE_API_KEY": "k", "USE_RAY": "1", "HOME": "/root"}
    env.update(TOKENIZERS_PARALLELISM="false", AWS_SECRET_ACCESS_KEY="x", KEYBOARD="us")
    recorded = manifest.environment(env)
    assert recorded["switches"] == {"USE_RAY": "1"}
    assert recorded["secrets_set"] == ["API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "JUDGE_API_KEY"]
    assert "s3cret-value" not in json.dumps(recorded) and "hf_abc" not in json.dumps(recorded)


def hand_made_run(tmp_path):
    """A finished run: recipe, data with its conversion report, an adapter, and the manifest recorded for them."""
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "multi-med.json"
    data.write_text('[{"instruction": "q", "output": "a"}]\n', encoding="utf-8")
    report = {"outputs": {"train": "data/multi-med.json", "eval": "data/multi-med-eval.json"}, "read": 3, "written": 1}
    (tmp_path / "data" / "multi-med.report.json").write_text(json.dumps(report), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"multi-med": {"file_name": "data/multi-med.json"}}), encoding="utf-8")
    recipe = tmp_path / "lora_sft.yaml"
    recipe.write_text(f"dataset: multi-med\ndataset_dir: {tmp_path}\nseed: 7\n", encoding="utf-8")
    output_dir = tmp_path / "saves" / "sft"
    output_dir.mkdir(parents=True)
    (output_dir / "adapter_model.safetensors").write_bytes(b"weights")
    args = {"dataset": "multi-med", "dataset_dir": str(tmp_path), "seed": 7}
    record = {
        "recipe": manifest._file(recipe),
        "deepspeed": None,
        "datasets": manifest.datasets(args),
        "packages": manifest.package_versions(),
        "state": "finished",
        "exit_code": 0,
        **manifest.end_manifest(output_dir),
    }
    runs.write_status(output_dir, **record)
    return output_dir, data, recipe


def test_the_manifest_records_data_report_and_outputs(tmp_path):
    output_dir, data, _ = hand_made_run(tmp_path)
    recorded, _ = runs.load_manifest(output_dir)
    (dataset,) = recorded["datasets"]
    assert dataset["sha256"] == manifest.sha256(data) and dataset["conversion"]["read"] == 3
    assert recorded["outputs"] == {"adapter_model.safetensors": manifest.sha256(output_dir / "adapter_model.safetensors")}
    assert manifest.verify(recorded, output_dir) == []


def test_verify_names_what_changed(tmp_path):
    output_dir, data, recipe = hand_made_run(tmp_path)
    recorded, _ = runs.load_manifest(output_dir)
    data.write_bytes(data.read_bytes().replace(b"q", b"Q"))  # one byte
    recipe.write_text(recipe.read_text(encoding="utf-8") + "learning_rate: 1.0e-3\n", encoding="utf-8")
    (output_dir / "adapter_model.safetensors").unlink()
    recorded["packages"]["torch"] = "0.0.1"
    changes = manifest.verify(recorded, output_dir)
    assert any(c.startswith(f"dataset multi-med {data}: changed") for c in changes)
    assert any(c.startswith("recipe ") and "changed" in c for c in changes)
    assert any("adapter_model.safetensors: missing now" in c for c in changes)
    assert any(c.startswith("package torch: 0.0.1 then") for c in changes)


def test_runs_verify_and_show_commands(tmp_path):
    output_dir, data, _ = hand_made_run(tmp_path)
    shown = CliRunner().invoke(main, ["runs", "show", str(output_dir)])
    assert shown.exit_code == 0 and "dataset     multi-med (train)" in shown.output
    ok = CliRunner().invoke(main, ["runs", "verify", str(output_dir)])
    assert ok.exit_code == 0 and "matches its manifest" in ok.output
    data.write_text(data.read_text(encoding="utf-8") + " ", encoding="utf-8")
    changed = CliRunner().invoke(main, ["runs", "verify", str(output_dir) + ".run.json"])
    assert changed.exit_code == 1 and str(data) in changed.output
    missing = CliRunner().invoke(main, ["runs", "verify", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no readable run manifest" in missing.output
