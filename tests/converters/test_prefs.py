"""Preference pairs: both layouts, the system prompt rule, filters on both answers, no care reminder, whole-turn
fitting with either answer, and the same accounting, masking, dedupe and split as every converter."""

import json

import pytest

from caretune.basics.errors import UserError
from converters import prefs
from converters.names import MEDICAL_SYSTEM_PROMPT
from converters.options import Options
from converters.pipeline import convert_rows
from converters.records import Skip
from converters.sources import SOURCES
from tests.helpers import SAMPLE, accounted, convert_into, shared_file

GOOD = "发热超过三天、精神变差或抽搐，请及时就医；体温高时可按说明书使用退烧药，具体用药请咨询医生。"


def reward_row(question="孩子发烧怎么办？", chosen=GOOD, rejected="多喝热水就好了，不用管它。"):
    return {"question": question, "response_chosen": chosen, "response_rejected": rejected}


def test_both_layouts_become_one_ranking_record():
    record = prefs.convert(reward_row())
    assert record == {
        "conversations": [{"from": "human", "value": "孩子发烧怎么办？"}],
        "chosen": {"from": "gpt", "value": GOOD},
        "rejected": {"from": "gpt", "value": "多喝热水就好了，不用管它。"},
        "system": MEDICAL_SYSTEM_PROMPT,
    }
    history = [
        {"from": "human", "value": "我头疼。"},
        {"from": "gpt", "value": "疼了多久？"},
        {"from": "human", "value": "三天了。"},
    ]
    record = prefs.convert({"conversations": history, "chosen": GOOD, "rejected": "忍忍就好了，不用去医院。"})
    assert record["conversations"] == history and record["chosen"]["value"] == GOOD
    assert prefs.pairs(record) == [("我头疼。", "疼了多久？"), ("三天了。", GOOD)]


def test_a_sets_own_system_turn_is_kept_and_general_sets_get_no_medical_prompt():
    own = [{"from": "system", "value": "你是儿科医生助手。"}, {"from": "human", "value": "宝宝拉肚子怎么办？"}]
    row = {"conversations": own, "chosen": GOOD, "rejected": "饿一天就好了，停止喂奶就行。"}
    assert prefs.convert(row)["system"] == "你是儿科医生助手。"
    general = SOURCES["prefs-general"]
    assert general.convert(reward_row())["system"] == "" and general.DATASET == "prefs-general"
    assert not general.MEDICAL and prefs.MEDICAL


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"question": "头疼？", "response_chosen": GOOD}, "missing_field"),
        ({"conversations": [{"from": "gpt", "value": "hi"}], "chosen": GOOD, "rejected": "不"}, "bad_role_order"),
        ({"conversations": "头疼", "chosen": GOOD, "rejected": "不"}, "non_string_field"),
        (reward_row(rejected=GOOD), prefs.SAME_ANSWERS),
        (reward_row(rejected="<think>想一想</think>"), "empty_after_strip"),
        ([1, 2], "not_an_object"),
    ],
)
def test_rows_that_cannot_be_pairs_are_skipped_with_a_reason(row, reason):
    result = prefs.convert(row)
    assert isinstance(result, Skip) and result.reason == reason


def test_filters_run_on_both_answers_and_no_reminder_is_added():
    rows = [
        reward_row("胃胀怎么办？", chosen="作为一个AI助手，我无法给出建议，请咨询医生。"),  # chosen fails: skipped
        reward_row("腹泻怎么办？", rejected="作为一个AI助手，我无法回答这个问题。"),  # rejected fails: kept, counted
        reward_row("咳嗽怎么办？", chosen="多喝温水，注意休息，咳嗽一般一周左右会慢慢好转。", rejected="吃头孢就行了，好得很快。"),
    ]
    batch = convert_rows("prefs", Options(care_reminder="append"), list(enumerate(rows, start=1)))
    assert [reject[2] for reject in batch.rejects] == ["ai_self_reference"]
    assert batch.notes == {"rejected_ai_self_reference": 1}
    kept = [json.loads(record) for record in batch.records]
    assert [record["conversations"][0]["value"] for record in kept] == ["腹泻怎么办？", "咳嗽怎么办？"]
    # a chosen answer that gives no care advice stays as written (care reminders are never applied to pairs)
    assert kept[1]["chosen"]["value"] == "多喝温水，注意休息，咳嗽一般一周左右会慢慢好转。"


def test_the_cli_refuses_care_reminders_and_every_answer_policy_for_pairs():
    from caretune.prep.conversion import conversion_options

    with pytest.raises(UserError, match="prefs rows get no care reminders"):
        conversion_options("prefs", True, "all", (), "append", "system")
    with pytest.raises(UserError, match="a preference pair trains the answers to its last question"):
        conversion_options("prefs", True, "all", (), "off", "system", "all")


def test_a_long_prompt_drops_old_whole_turns_so_both_answers_fit():
    """LLaMA-Factory's pairwise processor cuts a long prompt from its end (the question and the assistant header go);
    fitting keeps the newest whole turns that fit with the longer of the two answers."""

    def count(system, turns):
        from converters.turns import TurnTokens

        return TurnTokens(len(system), [len(q) + len(a) for q, a in turns], 0)

    old = "很早以前的问题。" * 10
    history = [
        {"from": "human", "value": old},
        {"from": "gpt", "value": "很早以前的回答。" * 10},
        {"from": "human", "value": "现在头疼。"},
    ]
    long_rejected = "不" * 150
    row = {"conversations": history, "chosen": GOOD, "rejected": long_rejected}
    options = Options(filters=frozenset(), cutoff_len=len(MEDICAL_SYSTEM_PROMPT) + 5 + len(long_rejected) + 20, count=count)
    (record,) = [json.loads(r) for r in convert_rows("prefs", options, [(1, row)]).records]
    assert record["conversations"] == [{"from": "human", "value": "现在头疼。"}]  # the old turn dropped, whole
    too_tight = Options(filters=frozenset(), cutoff_len=len(MEDICAL_SYSTEM_PROMPT) + 5 + len(GOOD) + 5, count=count)
    batch = convert_rows("prefs", too_tight, [(1, row)])
    assert [reject[2] for reject in batch.rejects] == ["too_long"]  # the rejected answer does not fit, even alone


def test_a_built_pair_is_fitted_by_whole_prompt_turns():
    def count(system, turns):
        from converters.turns import TurnTokens

        return TurnTokens(len(system), [len(q) + len(a) for q, a in turns], 0)

    old = [{"from": "human", "value": "以前的问题。" * 10}, {"from": "gpt", "value": "以前的回答。" * 10}]
    question = {"from": "human", "value": "现在头疼。"}
    record = prefs.convert({"conversations": [*old, question], "chosen": GOOD, "rejected": "忍着。"})
    room = len(MEDICAL_SYSTEM_PROMPT) + len("现在头疼。") + len(GOOD)
    assert prefs.fitted(record, room + 200, count) == record  # everything fits
    assert prefs.fitted(record, room + 10, count)["conversations"] == [{"from": "human", "value": "现在头疼。"}]
    assert prefs.fitted(record, room - 10, count) is None  # the question with the longer answer does not fit


def test_the_shipped_sample_is_accounted_masked_deduped_and_registered(tmp_path):
    (tmp_path / "data").mkdir()
    report, outputs = convert_into(tmp_path, prefs, SAMPLE / "prefs_med_sample.jsonl", eval_size=2)
    assert accounted(report) and report["read"] == 18
    assert report["skipped"] == {prefs.SAME_ANSWERS: 1} and report["eval"] == 1
    assert report["pii_masked"]["phone"] == 1 and report["settings"]["care_reminder"] == "off"
    registry = json.loads((tmp_path / "dataset_info.json").read_text())
    assert registry["prefs-med"]["ranking"] is True and registry["prefs-med-eval"]["columns"]["rejected"] == "rejected"
    rows = json.loads(outputs.train.read_text())
    assert all(row["chosen"]["from"] == row["rejected"]["from"] == "gpt" for row in rows)
    assert not any("13812345678" in json.dumps(row, ensure_ascii=False) for row in rows)
    again, _ = convert_into(tmp_path, prefs, SAMPLE / "prefs_med_sample.jsonl", eval_size=2)  # same outputs: replaced
    assert again["written"] == report["written"]


def test_pairs_whose_prompt_an_sft_set_holds_are_duplicates(tmp_path):
    from converters import chatmed

    (tmp_path / "data").mkdir()
    raw = tmp_path / "chatmed.jsonl"
    raw.write_text(json.dumps({"query": "孩子发烧怎么办？", "response": GOOD}, ensure_ascii=False) + "\n", encoding="utf-8")
    convert_into(tmp_path, chatmed, raw, eval_size=0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(json.dumps(row, ensure_ascii=False) for row in (reward_row(), reward_row("嗓子疼怎么办？"))) + "\n",
        encoding="utf-8",
    )
    report, _ = convert_into(tmp_path, prefs, pairs, eval_size=0)
    assert report["duplicates"] == 1 and report["written"] == 1


def test_the_shared_500_pairs_are_accounted_for(tmp_path):
    raw = shared_file("prefs/dpo_zh_500.jsonl")
    (tmp_path / "data").mkdir()
    report, outputs = convert_into(tmp_path, SOURCES["prefs-general"], raw, eval_size=20)
    assert accounted(report) and report["read"] == 500
    assert report["written"] + report["eval"] > 400
    own_system = [row for row in json.loads(outputs.train.read_text()) if row["system"]]
    assert own_system and all(row["system"] != MEDICAL_SYSTEM_PROMPT for row in own_system)


@pytest.mark.slow
@pytest.mark.lf
def test_llamafactory_reads_the_shared_pairs_through_check(tmp_path):
    """`caretune check` loads the converted pairs with LLaMA-Factory's own loader and pairwise encoding: every pair
    kept, none over the cutoff the conversion fitted them to."""
    from caretune.prep.check import check_datasets

    raw = shared_file("prefs/dpo_zh_500.jsonl")
    (tmp_path / "data").mkdir()
    from caretune.prep.fitting import TemplateTokenCounter

    report, _ = convert_into(
        tmp_path, SOURCES["prefs-general"], raw, eval_size=20, options=Options(cutoff_len=2048, count=TemplateTokenCounter())
    )
    results = check_datasets(
        ["prefs-general", "prefs-general-eval"], str(tmp_path / "dataset_info.json"), model_name_or_path=None, cutoff_len=2048
    )
    assert [(r["rows"], r["dropped"], r["error"]) for r in results] == [(report["written"], 0, None), (report["eval"], 0, None)]
    assert all(r["tokens"]["over_cutoff"] == 0 and r["tokens"]["max"] <= 2048 for r in results)
