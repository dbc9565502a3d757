"""The run manifest: secrets by name only, hashes that notice a changed byte, package versions, and the
`caretune runs show` / `runs verify` commands on a hand-made run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from caretune.cli import main
from caretune.training import manifest, runs, verification

pytestmark = pytest.mark.lf  # secret names are told from LLaMA-Factory's own argument fields


def test_secrets_are_listed_by_name_only():
    env = {"API_KEY": "s3cret-value", "HF_TOKEN": "hf_abc", "JUDGE_API_KEY": "k", "USE_RAY": "1", "HOME": "/root"}
    env.update(TOKENIZERS_PARALLELISM="false", AWS_SECRET_ACCESS_KEY="x", KEYBOARD="us")
    recorded = manifest.environment(env)
    assert recorded["switches"] == {"USE_RAY": "1"}
    assert recorded["secrets_set"] == ["API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "JUDGE_API_KEY"]
    assert "s3cret-value" not in json.dumps(recorded) and "hf_abc" not in json.dumps(recorded)


def git(project, *args):
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def hand_made_run(tmp_path, monkeypatch):
    """A finished run in a git project: recipe, data with its conversion report, a local base model, an adapter and
    a checkpoint, and the manifest `caretune train` records for them (relative paths, as recipes hold them)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    monkeypatch.chdir(project)
    data = project / "data" / "multi-med.json"
    data.write_text('[{"instruction": "q", "output": "a"}]\n', encoding="utf-8")
    report = {"outputs": {"train": "data/multi-med.json", "eval": "data/multi-med-eval.json"}, "read": 3, "written": 1}
    (project / "data" / "multi-med.report.json").write_text(json.dumps(report), encoding="utf-8")
    (project / "dataset_info.json").write_text(json.dumps({"multi-med": {"file_name": "data/multi-med.json"}}), encoding="utf-8")
    model = tmp_path / "base"
    model.mkdir()
    for name, text in (("config.json", '{"hidden_size": 8}'), ("tokenizer.json", "{}"), ("model.safetensors", "weights")):
        (model / name).write_text(text, encoding="utf-8")
    recipe = project / "lora_sft.yaml"
    recipe.write_text(
        "dataset: multi-med\ndataset_dir: .\nseed: 7\nhub_token: hf_SECRETabc\nmax_new_tokens: 512\n", encoding="utf-8"
    )
    (project / ".gitignore").write_text("saves/\n", encoding="utf-8")
    (project / "train.py").write_text("# the project's own code\n", encoding="utf-8")
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    output_dir = Path("saves") / "sft"
    (output_dir / "checkpoint-2").mkdir(parents=True)
    (output_dir / "adapter_model.safetensors").write_bytes(b"weights")
    (output_dir / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"step 2")
    args = {"dataset": "multi-med", "dataset_dir": ".", "seed": 7, "model_name_or_path": str(model)}
    record = manifest.start_manifest(Path("lora_sft.yaml"), args, 1, ["llamafactory-cli", "train"], {})
    record.update(state="finished", exit_code=0, attempts=[manifest.attempt_start(record, None)])
    runs.write_status(output_dir, **record, **manifest.end_manifest(output_dir, {**args, "model_name_or_path": str(model)}))
    return project / output_dir, data, recipe, model


def test_the_manifest_records_data_report_and_outputs(tmp_path, monkeypatch):
    output_dir, data, _, _ = hand_made_run(tmp_path, monkeypatch)
    recorded, _ = runs.load_manifest(output_dir)
    (dataset,) = recorded["datasets"]
    assert dataset["sha256"] == manifest.sha256(data) and dataset["conversion"]["read"] == 3
    assert recorded["outputs"] == {
        "adapter_model.safetensors": {"bytes": 7, "sha256": manifest.sha256(output_dir / "adapter_model.safetensors")}
    }
    assert recorded["project_root"] == str(tmp_path / "project") and dataset["abs_file"] == str(data)
    assert verification.verify(recorded, output_dir) == ([], list(VERIFIED))


VERIFIED = ("code", "recipe", "deepspeed", "datasets", "base model", "adapters", "outputs", "paths", "checkpoints", "packages")


def test_verify_names_what_changed(tmp_path, monkeypatch):
    output_dir, data, recipe, _ = hand_made_run(tmp_path, monkeypatch)
    recorded, _ = runs.load_manifest(output_dir)
    data.write_bytes(data.read_bytes().replace(b"q", b"Q"))  # one byte
    recipe.write_text(recipe.read_text(encoding="utf-8") + "learning_rate: 1.0e-3\n", encoding="utf-8")
    (output_dir / "adapter_model.safetensors").unlink()
    recorded["packages"]["torch"] = "0.0.1"
    changes, _ = verification.verify(recorded, output_dir)
    assert any(c.startswith(f"dataset multi-med {data}: changed") for c in changes)
    assert any(c.startswith("recipe ") and "changed" in c for c in changes)
    assert any("adapter_model.safetensors: missing now" in c for c in changes)
    assert any(c.startswith("package torch: 0.0.1 then") for c in changes)


def test_verify_resolves_paths_from_the_manifest_not_the_current_folder(tmp_path, monkeypatch):
    """Run from another checkout holding the old files, verify said `verified` while the run's own data had changed;
    run from saves/, it reported 5 files missing."""
    output_dir, data, _, _ = hand_made_run(tmp_path, monkeypatch)
    copy = tmp_path / "other-checkout"
    shutil.copytree(tmp_path / "project", copy)
    monkeypatch.chdir(tmp_path / "project" / "saves")
    assert verification.verify(runs.load_manifest(output_dir)[0], output_dir)[0] == []
    data.write_text("[]\n", encoding="utf-8")  # the run's own data changes; the copy keeps the old file
    monkeypatch.chdir(copy)
    changes, _ = verification.verify(runs.load_manifest(output_dir)[0], output_dir)
    assert any(c.startswith(f"dataset multi-med {data}: changed") for c in changes), changes


def test_verify_checks_the_code_the_base_model_and_the_checkpoints(tmp_path, monkeypatch):
    """A new commit, a base config.json change and a flipped byte in a checkpoint all passed. Files past the hashing
    bound (weights) are compared by size unless --deep."""
    monkeypatch.setattr("caretune.training.audit.HASH_BOUND", 6)  # "weights" (7 bytes) stands for a weight file
    output_dir, _, _, model = hand_made_run(tmp_path, monkeypatch)
    project = tmp_path / "project"
    recorded, _ = runs.load_manifest(output_dir)
    (project / "notes.txt").write_text("an untracked file (outputs often are)\n", encoding="utf-8")
    assert verification.verify(recorded, output_dir)[0] == []
    (project / "train.py").write_text("# changed, not committed\n", encoding="utf-8")
    assert verification.verify(recorded, output_dir)[0] == ["code: a clean tree then, other uncommitted changes now"]
    git(project, "add", ".")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "more")
    (model / "config.json").write_text('{"hidden_size": 16}', encoding="utf-8")
    (output_dir / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"step 3")
    (model / "model.safetensors").write_text("weightz", encoding="utf-8")  # same size: only --deep sees it
    changes, verified = verification.verify(recorded, output_dir)
    assert len(changes) == 3 and "base model" not in verified and "checkpoints" not in verified, changes
    assert changes[0].startswith("code: commit ") and changes[1].startswith(f"base model {model / 'config.json'}: 18 bytes then")
    assert "checkpoint-2/adapter_model.safetensors: changed" in changes[2]
    deep, _ = verification.verify(recorded, output_dir, deep=True)
    assert any(c.startswith(f"base model {model / 'model.safetensors'}: changed") for c in deep)


def test_secret_looking_recipe_values_are_redacted(tmp_path, monkeypatch):
    output_dir, _, _, _ = hand_made_run(tmp_path, monkeypatch)
    text = runs.status_path(output_dir).read_text(encoding="utf-8")
    recorded = json.loads(text)["recipe"]
    assert (
        "hf_SECRETabc" not in text and recorded["keys"]["hub_token"] == "<redacted>" and recorded["keys"]["max_new_tokens"] == 512
    )
    assert "text" not in recorded  # the parsed keys and the SHA-256, never the text (a comment may quote a secret)
    shown = CliRunner().invoke(main, ["runs", "show", str(output_dir), "--json"])
    assert shown.exit_code == 0 and "hf_SECRETabc" not in shown.output
    assert manifest.redacted_keys("api_key: sk-1\nwandb_api_key: x\ntokenized_path: t\nkey_file:\n") == {
        "api_key": "<redacted>",
        "wandb_api_key": "<redacted>",
        "tokenized_path": "t",
        "key_file": None,
    }


def test_no_secret_reaches_the_manifest_in_any_form():
    """A commented-out token, a password inside a URL, duplicate keys, YAML aliases, and secret names that are one word
    (hubtoken, wandbkey) or other words (authorization, pwd, passphrase); LLaMA-Factory's own fields stay readable."""
    text = (
        "# hub_token: hf_COMMENTED\n"
        "hf_hub_token: hf_FIRST\n"
        "hf_hub_token: hf_DUPLICATE\n"
        "swanlab_lark_webhook_url: https://bot:PASSINURL@open.example.com/hook?x=1\n"
        "hubtoken: HUBTOKEN1\n"
        "wandbkey: WANDBKEY1\n"
        "authorization: Bearer AUTH1\n"
        "db: {pwd: PWD1, passphrase: PASSPHRASE1, host: db.local}\n"
        "anchor_secret: &shared ALIASED1\n"
        "run_name: *shared\n"
        "max_new_tokens: 512\n"
        "tokenized_path: cache/tok\n"
        "new_special_tokens_config: cfg.yaml\n"
        "swanlab_api_key: SWAN1\n"
    )
    recorded = json.dumps(manifest.redacted_keys(text), ensure_ascii=False)
    for secret in ("hf_COMMENTED", "hf_FIRST", "hf_DUPLICATE", "PASSINURL", "bot:", "HUBTOKEN1", "WANDBKEY1", "AUTH1", "PWD1"):
        assert secret not in recorded, secret
    for secret in ("PASSPHRASE1", "ALIASED1", "SWAN1"):
        assert secret not in recorded, secret
    keys = manifest.redacted_keys(text)
    assert keys["swanlab_lark_webhook_url"] == "https://open.example.com/hook?x=1" and keys["db"]["host"] == "db.local"
    assert (keys["max_new_tokens"], keys["tokenized_path"], keys["new_special_tokens_config"]) == (512, "cache/tok", "cfg.yaml")


def test_a_tracked_file_that_is_not_utf8_is_read_as_bytes(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    state = manifest.git_state(tmp_path)
    assert state["dirty"] is True and len(state["commit"]) == 40 and state["diff_sha256"]


def test_sections_never_recorded_fail_and_malformed_manifests_give_one_line(tmp_path, monkeypatch):
    output_dir, _, _, _ = hand_made_run(tmp_path, monkeypatch)
    recorded, _ = runs.load_manifest(output_dir)
    for section in ("outputs", "checkpoints", "base_model"):
        del recorded[section]  # a run killed before it ended records none of them
    recorded["datasets"] = {"multi-med": "x"}
    runs.write_status(output_dir, **recorded)
    full = json.loads(runs.status_path(output_dir).read_text(encoding="utf-8"))
    for section in ("outputs", "checkpoints", "base_model"):
        full.pop(section)
    runs.status_path(output_dir).write_text(json.dumps(full), encoding="utf-8")
    result = CliRunner().invoke(main, ["runs", "verify", str(output_dir)])
    assert result.exit_code == 1 and "verified:" not in result.output
    for line in (
        "outputs: never recorded",
        "checkpoints: never recorded",
        "base model: never recorded",
        "datasets: not verifiable",
    ):
        assert line in result.output, result.output
    assert "Traceback" not in result.output
    shown = CliRunner().invoke(main, ["runs", "show", str(output_dir)])
    assert shown.exit_code == 1 and len(shown.output.strip().splitlines()) == 1 and "malformed" in shown.output
    runs.status_path(output_dir).write_text("[1, 2]", encoding="utf-8")
    broken = CliRunner().invoke(main, ["runs", "verify", str(output_dir)])
    assert broken.exit_code == 1 and len(broken.output.strip().splitlines()) == 1 and "no readable run manifest" in broken.output


def test_runs_verify_and_show_commands(tmp_path, monkeypatch):
    output_dir, data, _, _ = hand_made_run(tmp_path, monkeypatch)
    shown = CliRunner().invoke(main, ["runs", "show", str(output_dir)])
    assert shown.exit_code == 0 and "dataset     multi-med (train)" in shown.output and "attempt 1" in shown.output
    ok = CliRunner().invoke(main, ["runs", "verify", str(output_dir)])
    assert ok.exit_code == 0 and f"matches its manifest ({', '.join(VERIFIED)})" in ok.output
    data.write_text(data.read_text(encoding="utf-8") + " ", encoding="utf-8")
    changed = CliRunner().invoke(main, ["runs", "verify", str(output_dir) + ".run.json"])
    assert changed.exit_code == 1 and str(data) in changed.output
    missing = CliRunner().invoke(main, ["runs", "verify", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no readable run manifest" in missing.output


def test_a_resume_is_an_attempt_of_its_own(tmp_path, monkeypatch):
    """A resume overwrote the first attempt's record: data edited between the attempts left only the second hash,
    and last_step and outputs carried over stale."""
    import sys

    from caretune.training import train
    from caretune.training.preflight import Launch

    output_dir, data, recipe, model = hand_made_run(tmp_path, monkeypatch)
    runs.status_path(output_dir).unlink()
    args = {"output_dir": str(output_dir), "model_name_or_path": str(model), "dataset": "multi-med", "dataset_dir": "."}
    monkeypatch.setattr(train, "command", lambda plan: [sys.executable, "-c", "raise SystemExit(130)"])
    assert train.run(Launch(recipe=recipe, args=args, processes=1)) == 130
    first = json.loads(runs.status_path(output_dir).read_text(encoding="utf-8"))
    data.write_text('[{"instruction": "q2", "output": "a2"}]\n', encoding="utf-8")
    (output_dir / "adapter_model.safetensors").unlink()
    monkeypatch.setattr(train, "command", lambda plan: [sys.executable, "-c", "import time; time.sleep(0.2)"])
    plan = Launch(recipe=recipe, args=args, processes=1, overrides={"resume_from_checkpoint": str(output_dir / "checkpoint-2")})
    assert train.run(plan) == 0
    second = json.loads(runs.status_path(output_dir).read_text(encoding="utf-8"))
    attempts = second["attempts"]
    assert [a["state"] for a in attempts] == ["interrupted", "finished"] and attempts[1]["resumed_from"].endswith("checkpoint-2")
    assert attempts[0]["data_sha256"] != attempts[1]["data_sha256"]
    assert first["outputs"] and "adapter_model.safetensors" not in second["outputs"]  # this attempt's, not the first's
    changes, _ = verification.verify(second, output_dir)
    assert "dataset multi-med: attempt 1 trained on other data" in " ".join(changes)


def test_verify_notices_outputs_and_checkpoints_that_appeared_and_sections_left_empty(tmp_path, monkeypatch):
    output_dir, _, _, _ = hand_made_run(tmp_path, monkeypatch)
    recorded, _ = runs.load_manifest(output_dir)
    (output_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    (output_dir / "checkpoint-10").mkdir()
    (output_dir / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"later")
    changes, verified = verification.verify(recorded, output_dir)
    assert f"output {output_dir / 'adapter_config.json'}: new since" in changes
    assert f"checkpoint {output_dir / 'checkpoint-10'}: present now, not recorded" in changes
    assert "outputs" not in verified and "checkpoints" not in verified
    recorded.update(outputs=None, checkpoints=None, base_model=None)  # a run killed before its end
    changes, _ = verification.verify(recorded, output_dir)
    for section in ("outputs", "checkpoints", "base model"):
        assert f"{section}: never recorded, so not verified" in changes, changes


def test_redaction_reads_the_yaml_not_its_lines():
    """Quoted keys, flow mappings, list items, a value on the next line, camelCase and folded values kept the secret."""
    text = (
        '"hf_hub_token": hf_QUOTED\n'
        "'hub_token': hf_SQ\n"
        "report: {api_key: FLOWSECRET, project: care}\n"
        "callbacks:\n  - api_key: LISTSECRET\n"
        "ms_hub_token:\n  hf_NEXTLINE\n"
        "hubToken: CAMELSECRET\n"
        "om_hub_token: >-\n  hf_FOLDED\n  more\n"
        "ignore_pad_token_for_loss: true\n"
        "max_new_tokens: 512\n"
    )
    redacted = manifest.redacted_keys(text)
    for secret in ("hf_QUOTED", "hf_SQ", "FLOWSECRET", "LISTSECRET", "hf_NEXTLINE", "CAMELSECRET", "hf_FOLDED"):
        assert secret not in json.dumps(redacted), secret
    assert redacted["ignore_pad_token_for_loss"] is True and redacted["max_new_tokens"] == 512
    assert redacted["report"]["project"] == "care"
    assert manifest.redacted_keys("lr: 1.0e-4  # no secret\n") == {"lr": 1.0e-4}
    assert manifest.redacted_keys("a: [unclosed\n") is None


def test_a_run_that_starts_from_an_adapter_records_and_verifies_it(tmp_path, monkeypatch):
    """A DPO run starts from the SFT adapter: its files and the manifest of the run that trained it are recorded, and
    a changed byte in either is named; a run recorded before adapters were (format 1) is not held to them."""
    output_dir, _, _, _ = hand_made_run(tmp_path, monkeypatch)
    sft = Path("saves") / "sft"
    args = {"adapter_name_or_path": str(sft), "model_name_or_path": "m"}
    (adapter,) = manifest.adapters(args)
    assert adapter["path"] == "saves/sft" and set(adapter["files"]) == {"adapter_model.safetensors"}
    assert adapter["trained_by"]["manifest"] == str(runs.status_path(sft))
    recorded, _ = runs.load_manifest(output_dir)
    recorded["adapters"] = manifest.adapters(args)
    assert verification.verify(recorded, output_dir) == ([], list(VERIFIED))
    (sft / "adapter_model.safetensors").write_bytes(b"retrained")
    problems, _ = verification.verify(recorded, output_dir)
    assert any(problem.startswith("starting adapter") and "adapter_model.safetensors" in problem for problem in problems), problems
    old = {key: value for key, value in recorded.items() if key != "adapters"} | {"manifest_format": 1}
    assert "adapters" not in verification.verify(old, output_dir)[1] and not any(
        "adapters" in p for p in verification.verify(old, output_dir)[0]
    )


def test_verify_sees_every_file_link_entry_and_path(tmp_path, monkeypatch):
    """Each of these passed `runs verify` before: a new special_tokens_map.json in the base model (it changes the eos),
    an edited tokenizer_config.json in the output folder, a new file inside a checkpoint, an untracked file in a code
    package, a changed registry entry, a repointed dataset link, and a changed tokenized_path. Each is named, and
    verify passes again once it is undone."""
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    output_dir, data, _, model = hand_made_run(tmp_path, monkeypatch)
    (output_dir / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (project / "data" / "v1.json").write_bytes(data.read_bytes())
    (project / "data" / "v2.json").write_text('[{"instruction": "other", "output": "data"}]\n', encoding="utf-8")
    link = project / "data" / "linked.json"
    link.symlink_to("v1.json")
    registry = project / "dataset_info.json"
    entries = json.loads(registry.read_text(encoding="utf-8"))
    registry.write_text(json.dumps({**entries, "linked": {"file_name": "data/linked.json"}}), encoding="utf-8")
    (project / "tok").mkdir()
    (project / "tok" / "data.arrow").write_bytes(b"tokenized")
    args = {"dataset": "multi-med,linked", "dataset_dir": ".", "model_name_or_path": str(model), "tokenized_path": "tok"}
    record = manifest.start_manifest(Path("lora_sft.yaml"), args, 1, ["llamafactory-cli", "train"], {})
    record.update(state="finished", exit_code=0, attempts=[manifest.attempt_start(record, None)])
    runs.write_status(output_dir, **record, **manifest.end_manifest(output_dir, args))
    recorded, _ = runs.load_manifest(output_dir)
    assert verification.verify(recorded, output_dir)[0] == []

    def changed(change, undo, expected):
        change()
        problems = verification.verify(recorded, output_dir)[0]
        assert any(expected in problem for problem in problems), problems  # (a tracked registry is code too)
        undo()
        assert verification.verify(recorded, output_dir)[0] == []

    special = model / "special_tokens_map.json"
    changed(lambda: special.write_text('{"eos_token": "x"}'), special.unlink, f"base model {special}: new since")
    tokenizer_config = output_dir / "tokenizer_config.json"
    changed(
        lambda: tokenizer_config.write_text("[]"), lambda: tokenizer_config.write_text("{}"), f"output {tokenizer_config}: changed"
    )
    extra = output_dir / "checkpoint-2" / "rng_state.pth"
    changed(lambda: extra.write_bytes(b"x"), extra.unlink, f"checkpoint {extra}: new since")
    untracked = project / "pkg" / "patch.py"
    changed(lambda: untracked.write_text("x = 1\n"), untracked.unlink, "code: untracked file pkg/patch.py: new since")
    changed(
        lambda: registry.write_text(json.dumps({**entries, "linked": {"file_name": "data/linked.json", "ranking": True}})),
        lambda: registry.write_text(json.dumps({**entries, "linked": {"file_name": "data/linked.json"}})),
        "dataset linked: its dataset_info.json entry changed since",
    )

    def repoint(target):
        link.unlink()
        link.symlink_to(target)

    problems_before = len(verification.verify(recorded, output_dir)[0])
    repoint("v2.json")
    problems = verification.verify(recorded, output_dir)[0]
    assert any("points at" in p and "v2.json" in p for p in problems) and problems_before == 0, problems
    repoint("v1.json")
    tokenized = project / "tok" / "data.arrow"
    changed(lambda: tokenized.write_bytes(b"retokenizd"), lambda: tokenized.write_bytes(b"tokenized"), "recipe path tokenized_path")
    shown = CliRunner().invoke(main, ["runs", "show", str(output_dir)])
    assert f"sha256 {manifest.sha256(runs.status_path(output_dir))}" in shown.output


def test_weights_in_the_hub_cache_are_recorded_by_their_blob_name_without_hashing(tmp_path, monkeypatch):
    """A run's end hashed Qwen3-8B's 16 GB of weights again, though the hub cache names each blob by its SHA-256;
    --deep still hashes (a blob name is a claim, not a check)."""
    from caretune.training import audit

    monkeypatch.setattr(audit, "HASH_BOUND", 4)
    blob = tmp_path / "blobs" / hashlib.sha256(b"weights").hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    snapshot = tmp_path / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)

    def no_hashing(path):
        raise AssertionError(f"hashed {path}")

    hashing = audit._sha256
    monkeypatch.setattr(audit, "_sha256", no_hashing)
    recorded = audit.listing(snapshot)
    assert recorded == {"model.safetensors": {"bytes": 7, "sha256": blob.name, "from": "hub blob name"}}
    assert audit.listing_changes("base model", snapshot, recorded, deep=False) == []
    monkeypatch.setattr(audit, "_sha256", hashing)
    blob.write_bytes(b"weightz")  # same size: only --deep sees it
    assert audit.listing_changes("base model", snapshot, recorded, deep=False) == []
    (deep,) = audit.listing_changes("base model", snapshot, recorded, deep=True)
    assert deep.startswith(f"base model {snapshot / 'model.safetensors'}: changed")
