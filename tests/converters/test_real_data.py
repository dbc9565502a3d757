"""Real public shards from ../shared/data, when present: accounting and zero train/eval leakage."""

from converters import chatmed, huatuo
from converters.outputs import Outputs
from converters.pipeline import convert_file
from converters.records import query_key
from tests.helpers import convert_into, read_json, shared_file


def convert(source, raw, project):
    return convert_into(project, source, raw, eval_size=200)


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
    assert report2["read"] == (report2["written"] + report2["eval"] + report2["duplicates"] + sum(report2["skipped"].values()))
    all_chatmed = set(train) | set(held_out)
    all_huatuo = set(keys(huatuo, outputs2.train)) | set(keys(huatuo, outputs2.eval))
    assert not all_chatmed & all_huatuo


def test_real_chatmed_shard_filters_and_care_advice(project):
    raw = shared_file("chatmed/corpus_92_hpc.jsonl")
    report, outputs = convert(chatmed, raw, project)
    # The counts the README quotes for the shared shard.
    assert report["skipped"] == {"ai_self_reference": 241, "contact_or_ad": 2, "short_answer": 1, "truncated_answer": 33}
    assert report["changes"] == {
        "think_removed": 0,
        "wrapper_stripped": 0,
        "care_reminder_added": 995,
        "emergency_reminder_added": 24,
    }
    for split in ("train", "eval"):
        assert report["care"][split]["advises_care_share"] >= 0.95
    answers = [r["output"] for r in read_json(outputs.train) + read_json(outputs.eval)]
    assert not any("作为一个AI" in a or "作为AI" in a for a in answers)


def test_real_chatmed_shard_with_care_off_and_no_filters_is_the_previous_conversion(project):
    import hashlib

    from converters.options import HeldOut, Options

    raw = shared_file("chatmed/corpus_92_hpc.jsonl")
    outputs = Outputs.for_source(chatmed, None, project / "data")
    report = convert_file(
        chatmed,
        raw,
        outputs,
        HeldOut(500, 0.1),
        options=Options(filters=frozenset(), strip_wrappers=False, care_reminder="off", layout="walkthrough"),
    )
    assert report["care"]["train"]["advises_care_share"] < 0.8  # what the data teaches unchanged
    assert hashlib.sha256(outputs.train.read_bytes()).hexdigest() == (
        "2fb04fecd10ea48c5236eea286b57bf3eb5760948520c4f56b5290696f5afaac"
    )
    assert hashlib.sha256(outputs.eval.read_bytes()).hexdigest() == (
        "cdf041293f0b46744f37018b077ffd36a06232a19ff800df7bda1cb758ed9b55"
    )
