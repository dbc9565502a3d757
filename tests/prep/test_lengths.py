"""Token lengths tokenized once and cached: the same figures as LLaMA-Factory's preprocessing at every cutoff,
and a cache that is reused, invalidated by a changed file or template, and bypassed by --no-cache."""

import json
import os

import pytest

from caretune.constants import TEMPLATE
from caretune.prep import lengths
from tests.helpers import converted_workspace

pytestmark = pytest.mark.lf


def test_truncation_replay_by_hand():
    # one turn: nothing cut below the cutoff; above it LLaMA-Factory's infer_seqlen shares the budget
    assert lengths.truncated_length([[30, 50]], 100) == 80
    assert lengths.truncated_length([[30, 50]], 60) == 60  # answer kept first (50 * 2 >= 60, 30 * 2 >= 60: both cut)
    assert lengths.truncated_length([[10, 500]], 100) == 100
    # later turns stop once the budget is spent; the EOS of efficient-EOS templates counts
    assert lengths.truncated_length([[40, 40], [40, 40]], 100, efficient_eos=True) == 100
    assert lengths.truncated_length([[40, 40], [40, 40]], 1000, efficient_eos=True) == 161


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return converted_workspace(tmp_path_factory.mktemp("lengths"))


@pytest.fixture(scope="module")
def tokenizer():
    return lengths.TokenizerSource(None)


def lf_preprocessed_lengths(workspace, tokenizer, name, cutoff_len, **options):
    """LLaMA-Factory's own SFT preprocessing of a registered dataset: the reference."""
    from llamafactory.data.loader import _get_preprocessed_dataset
    from llamafactory.data.template import get_template_and_fix_tokenizer

    from caretune.lf import load_aligned

    aligned, data_args, training_args = load_aligned(
        name,
        str(workspace),
        "Qwen/Qwen3-8B",
        str(workspace / "scratch"),
        template=TEMPLATE,
        cutoff_len=cutoff_len,
        overwrite_cache=True,
        **options,
    )
    template = get_template_and_fix_tokenizer(tokenizer.load(), data_args)
    processed = _get_preprocessed_dataset(aligned, data_args, training_args, "sft", template, tokenizer.load())
    return [len(ids) for ids in processed["input_ids"]]


@pytest.mark.parametrize("name", ["multi-med", "huatuo2-sft"])
@pytest.mark.slow
def test_replayed_lengths_equal_llamafactory_preprocessing_at_every_cutoff(workspace, tokenizer, name):
    request = lengths.LengthRequest(TEMPLATE, use_cache=False)
    data = lengths.turn_lengths(name, str(workspace), tokenizer, str(workspace / "scratch"), request)
    for cutoff in (64, 150, 511, 2047, 1 << 30):
        for mask_history in (False, True):  # one pass serves both: the recipes' mask_history and check's default
            reference = lf_preprocessed_lengths(
                workspace, tokenizer, name, cutoff, enable_thinking=False, mask_history=mask_history
            )
            assert data.lengths(cutoff, mask_history) == reference, (cutoff, mask_history)
    assert min(data.lengths(1 << 30)) < 150 < max(data.lengths(1 << 30))  # the cutoffs above do cut some rows


def cache_files(workspace):
    return sorted((workspace / lengths.CACHE_DIR).glob("*.npz"))


def test_cache_is_reused_and_invalidated(workspace, tokenizer):
    def run(**kwargs):
        request = lengths.LengthRequest(kwargs.pop("template", TEMPLATE), with_care=True, **kwargs)
        return lengths.turn_lengths("multi-med", str(workspace), tokenizer, str(workspace / "s"), request, log=seen.append)

    seen = []
    for path in cache_files(workspace):
        path.unlink()
    first = run()
    assert len(cache_files(workspace)) == 1 and seen == []
    again = run()
    assert seen and "from the cache" in seen[0]
    assert again.lengths(2047) == first.lengths(2047) and again.care == first.care and again.rows == first.rows
    seen.clear()
    run(use_cache=False)  # --no-cache computes and does not read
    assert seen == []
    run(template="qwen3_nothink")  # another template is another key; the entry under the old key is removed
    assert seen == []
    assert len([p for p in cache_files(workspace) if p.name.startswith("multi-med-") and "eval" not in p.name]) == 1
    run()
    seen.clear()
    shared = run(mask_history=True)  # plan's options (the recipes' mask_history) share check's entry
    assert seen and "from the cache" in seen[0]
    assert shared.lengths(2047, mask_history=True) == again.lengths(2047, mask_history=True)
    seen.clear()
    run(enable_thinking=True)  # thinking moves the empty think block into the answers: another key
    assert seen == []
    data_file = workspace / "data" / "multi-med.json"
    rows = json.loads(data_file.read_text(encoding="utf-8"))
    data_file.write_text(json.dumps(rows[:-1], ensure_ascii=False), encoding="utf-8")
    changed = run()
    assert seen == [] and changed.rows == first.rows - 1  # a changed file is tokenized anew
    before = cache_files(workspace)
    run(sample=5)  # a sample is never cached
    assert cache_files(workspace) == before


def test_a_damaged_or_unwritable_cache_is_only_a_cache(workspace, tokenizer):
    warned = []

    def run(**kwargs):
        request = lengths.LengthRequest(TEMPLATE, **kwargs)
        return lengths.turn_lengths("huatuo2-sft", str(workspace), tokenizer, str(workspace / "s"), request, warn=warned.append)

    first = run()
    (entry,) = [p for p in cache_files(workspace) if p.name.startswith("huatuo2-sft-")]
    entry.write_bytes(entry.read_bytes()[:100])  # truncated, as a full disk or a kill leaves it
    again = run()
    assert again.lengths(2047) == first.lengths(2047)
    assert len(warned) == 1 and "unreadable token-length cache (BadZipFile)" in warned[0] and "--no-cache" in warned[0]
    import numpy as np

    np.savez(open(entry, "wb"), turns=np.zeros(1), pairs=np.zeros(1), meta=np.array("[1, 2]"))  # well-formed, wrong shape
    assert run().lengths(2047) == first.lengths(2047) and "unreadable token-length cache (TypeError)" in warned[-1]
    folder = workspace / lengths.CACHE_DIR
    saved = folder.with_name("saved")
    folder.rename(saved)
    folder.write_text("not a folder", encoding="utf-8")  # the cache cannot be written there (root ignores modes)
    try:
        unwritten = run()
    finally:
        folder.unlink()
        saved.rename(folder)
    assert unwritten.lengths(2047) == first.lengths(2047) and "cannot write the token-length cache" in warned[-1]


@pytest.mark.slow
def test_check_and_plan_give_identical_figures_with_and_without_the_cache(workspace, monkeypatch):
    from caretune.planning.plan import make_plan
    from caretune.prep.check import check_datasets

    monkeypatch.chdir(workspace)
    for path in cache_files(workspace):
        path.unlink()
    registry = str(workspace / "dataset_info.json")
    uncached = check_datasets([], registry, model_name_or_path=None, cutoff_len=150, use_cache=False)
    assert cache_files(workspace) == []
    filled = check_datasets([], registry, model_name_or_path=None, cutoff_len=150)
    from_cache = check_datasets([], registry, model_name_or_path=None, cutoff_len=150)
    assert uncached == filled == from_cache
    recipe = "recipes/qwen3-8b/lora_sft.yaml"
    assert make_plan(recipe, gpus=4, gpu_name="h800") == make_plan(recipe, gpus=4, gpu_name="h800", use_cache=False)
    assert os.listdir(workspace / lengths.CACHE_DIR)


def test_concurrent_writers_leave_one_whole_cache_file(tmp_path):
    import threading

    import numpy as np

    path = tmp_path / "cache" / "multi-med-key.npz"
    versions = [
        lengths.TurnLengths(
            rows=n,
            turns=np.ones(n, dtype=np.int32),
            pairs=np.concatenate([np.full((n, 2), n, dtype=np.int32), np.zeros((n, 1), dtype=np.int32)], axis=1),
            prefix=0,
            efficient_eos=False,
            care={"rows": n},
        )
        for n in (1000, 2000, 3000, 4000)
    ]
    warned = []
    threads = [
        threading.Thread(target=lengths._save, args=(path, "multi-med", version, warned.append))
        for version in versions
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = lengths._load(path, warned.append)
    assert warned == []
    assert stored.rows in (1000, 2000, 3000, 4000) and stored.care == {"rows": stored.rows}
    assert stored.lengths(1 << 30) == [2 * stored.rows] * stored.rows  # arrays and metadata of one writer
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
