"""Real public shards from ../shared/data, when present: accounting and zero train/eval leakage."""

from converters import chatmed, huatuo
from converters.pipeline import Outputs, convert_file
from converters.records import query_key
from tests.conftest import read_json, shared_file


def convert(source, raw, project):
    outputs = Outputs.for_source(source, None, project / "data")
    report = convert_file(source, raw, outputs, eval_size=200, max_eval_fraction=0.1,
                          registry_path=project / "dataset_info.json")
    return report, outputs


def keys(source, path):
    return [query_key(source.first_query(r)) for r in read_json(path)]


def test_real_chatmed_shard_and_sharegpt_rows(project):
    chatmed_raw = shared_file("chatmed/corpus_92_hpc.jsonl")
    sharegpt_raw = shared_file("sharegpt/medical_sft_1K_format.jsonl")
    report, outputs = convert(chatmed, chatmed_raw, project)
    assert report["read"] == 4923
    assert report["read"] == report["written"] + report["eval"] + report["duplicates"] + sum(report["skipped"].values())
    assert report["eval"] == 200
    assert 0 < report["duplicates"] < report["read"] * 0.1  # the card says ~2% duplicate queries per shard
    train, held_out = keys(chatmed, outputs.train), keys(chatmed, outputs.eval)
    assert len(set(train)) == len(train) and not set(train) & set(held_out)

    # The ShareGPT medical rows have HuatuoGPT2's shape (JSON Lines, no id).
    report2, outputs2 = convert(huatuo, sharegpt_raw, project)
    assert report2["read"] == 1000 and report2["prior_queries"]["datasets"] == ["multi-med"]
    assert report2["read"] == (report2["written"] + report2["eval"] + report2["duplicates"]
                               + sum(report2["skipped"].values()))
    all_chatmed = set(train) | set(held_out)
    all_huatuo = set(keys(huatuo, outputs2.train)) | set(keys(huatuo, outputs2.eval))
    assert not all_chatmed & all_huatuo
