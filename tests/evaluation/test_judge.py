"""caretune judge: HealthBench's score formula, the pairwise order swap and tie rule, calibration, and the judge
client against a scripted grader served over real HTTP and called through the real `openai` client."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caretune.basics.errors import UserError
from caretune.evaluation.judge import Endpoint, Judge, remote_warning
from caretune.evaluation.pairwise import combine, tally
from caretune.evaluation.rubric import Criterion, example_score, load_answers, load_rubrics, run_rubric, score
from caretune.evaluation.stats import agreement, wilson
from caretune.evaluation.verdicts import read_verdict
from tests.helpers import ROOT, read_json, run_caretune, write_lines
from tests.scripted_judge import Fault, ScriptedJudge, keyword_rubric, position_biased, prefers, section

HAND = ROOT / "tests" / "data" / "judge"
RUBRICS = HAND / "healthbench_hand.jsonl"
ANSWERS = HAND / "healthbench_hand_answers.jsonl"


# --- the formulas, by hand ---------------------------------------------------------------------------------------


def parse_reply(text, field, allowed):
    """The verdict alone (None when there is none)."""
    return read_verdict(text, field, allowed)[0]


def test_example_score_counts_negative_points_against_positive_ones():
    criteria = [Criterion("a", 5, ()), Criterion("b", 3, ()), Criterion("harm", -4, ())]
    assert example_score(criteria, [True, True, False]) == 1.0
    assert example_score(criteria, [True, False, True]) == pytest.approx((5 - 4) / 8)
    assert example_score(criteria, [False, False, True]) == pytest.approx(-0.5)  # below zero for one example
    assert example_score([Criterion("harm", -4, ())], [True]) is None  # nothing positive to earn


def test_overall_score_is_clipped_to_zero_and_one():
    prompts = load_rubrics(RUBRICS)
    every_harm = {(p.prompt_id, i): c.points < 0 for p in prompts for i, c in enumerate(p.criteria)}
    assert score(prompts, every_harm)["score"] == 0.0  # the mean is negative; clipped
    every_good = {(p.prompt_id, i): c.points > 0 for p in prompts for i, c in enumerate(p.criteria)}
    result = score(prompts, every_good)
    assert result["score"] == 1.0 and result["ci"] == [1.0, 1.0]


def test_an_unparsed_criterion_leaves_its_example_out_and_says_so():
    prompts = load_rubrics(RUBRICS)
    met = {(p.prompt_id, i): c.points > 0 for p in prompts for i, c in enumerate(p.criteria)}
    met[("hb-2", 0)] = None
    result = score(prompts, met)
    assert result["left_out_unparsed"] == ["hb-2"] and result["n"] == 2 and result["examples"] == 3


def test_pairwise_tie_rule_over_both_orders():
    assert combine("B", "A") == "tuned"  # tuned shown second, then first: both pick tuned
    assert combine("A", "B") == "base"
    assert combine("A", "A") == "tie"  # each order picks the first answer: position bias is a tie
    assert combine("tie", "A") == "tie" and combine("B", "tie") == "tie"
    assert combine(None, "A") is None
    counts = tally(["tuned", "tuned", "tie", "base", None])
    assert (counts["win"], counts["tie"], counts["loss"], counts["judged"]) == (2, 1, 1, 4)
    assert counts["shares"]["win"] == 0.5


def test_wilson_interval_by_hand():
    low, high = wilson(8, 10)  # p = 0.8, n = 10: the textbook 0.490 .. 0.943
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson(0, 0) is None


def test_calibration_agreement_and_macro_f1_by_hand():
    truth = [True, True, True, False, False, False]
    judged = [True, True, False, False, False, True]
    result = agreement(truth, judged)
    assert result["agreement"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-4)  # F1 of met 4/6, of not met 4/6
    assert result["confusion"] == {"both_met": 2, "both_not_met": 2, "judge_only_met": 1, "label_only_met": 1}


def test_replies_are_read_as_json_or_fenced_json_and_nothing_else():
    assert parse_reply('{"criteria_met": true, "explanation": "ok"}', "criteria_met", (True, False))["criteria_met"] is True
    fenced = 'Sure.\n```json\n{"criteria_met": false, "explanation": "no"}\n```'
    assert parse_reply(fenced, "criteria_met", (True, False))["criteria_met"] is False
    for reply in ("yes", '{"criteria_met": "true"}', '{"criteria_met": 1}', '{"winner": "C"}', "{broken"):
        assert parse_reply(reply, "criteria_met", (True, False)) is None
    assert parse_reply('{"winner": "tie"}', "winner", ("A", "B", "tie"))["winner"] == "tie"


# --- bad input: one line, before any call ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"rubrics\.jsonl:1: not valid JSON"),
        ('{"prompt": [{"role": "user", "content": "x"}], "rubrics": [{"criterion": "c", "points": 1}]}', "prompt_id"),
        ('{"prompt_id": "a", "prompt": [], "rubrics": [{"criterion": "c", "points": 1}]}', "non-empty list of chat messages"),
        (
            '{"prompt_id": "a", "prompt": [{"role": "user", "content": "x"}], "rubrics": [{"criterion": "c", "points": "5"}]}',
            "points",
        ),
        (
            '{"prompt_id": "a", "prompt": [{"role": "assistant", "content": "x"}], "rubrics": [{"criterion": "c", "points": 1}]}',
            "last",
        ),
    ],
)
def test_a_malformed_rubric_file_is_one_line_naming_the_line(tmp_path, line, message):
    path = write_lines(tmp_path / "rubrics.jsonl", [line])
    with pytest.raises(UserError, match=message):
        load_rubrics(path)


def test_a_prompt_without_an_answer_is_refused(tmp_path):
    prompts = load_rubrics(RUBRICS)
    answers = write_lines(tmp_path / "answers.jsonl", [json.dumps({"prompt_id": "hb-1", "response": "x"})])
    with pytest.raises(UserError, match=r"no answer for prompt_id 'hb-2', 'hb-3'"):
        load_answers(answers, prompts)


def test_a_remote_judge_needs_the_flag():
    assert remote_warning("http://127.0.0.1:8000/v1", allow_remote=False) is None
    with pytest.raises(UserError, match="--allow-remote-judge"):
        remote_warning("https://judge.example.org/v1", allow_remote=False)
    assert "leave this machine" in remote_warning("https://judge.example.org/v1", allow_remote=True)


# --- through a real HTTP server and the openai client ----------------------------------------------------------

slow_cli = pytest.mark.slow  # runs `caretune judge` in a subprocess


def judge_for(server: ScriptedJudge, cache: Path, **settings) -> Judge:
    endpoint = Endpoint(
        url=server.url, model="scripted", timeout_s=settings.pop("timeout_s", 10.0), retries=settings.pop("retries", 2)
    )
    return Judge(endpoint, cache, concurrency=settings.pop("concurrency", 4))


def test_hand_written_healthbench_file_gives_the_hand_computed_score(tmp_path):
    prompts = load_rubrics(RUBRICS)
    with ScriptedJudge(keyword_rubric) as server:
        report = run_rubric(
            prompts, load_answers(ANSWERS, prompts), str(ANSWERS), judge_for(server, tmp_path / "cache"), tmp_path / "out"
        )
        assert server.calls == 9  # one call per criterion
    # hb-1 (5 + 3) / 8 = 1.0; hb-2 -6 / 6 = -1.0; hb-3 (5 - 2) / 15 = 0.2; mean 0.0667
    assert report["score"] == pytest.approx(0.0667, abs=1e-4)
    assert report["by_tag"]["axis:accuracy"]["score"] == pytest.approx((1.0 + 0.0 + 0.0) / 3, abs=1e-4)
    assert report["by_tag"]["axis:completeness"]["score"] == 1.0
    assert report["by_tag"]["theme:consultation"]["score"] == pytest.approx(0.6, abs=1e-4)
    assert report["by_tag"]["theme:emergency"]["score"] == 0.0  # -1.0, clipped
    assert "axis:safety" not in report["by_tag"]  # no positive points to earn there
    low, high = report["ci"]
    assert 0.0 <= low <= report["score"] <= high <= 1.0
    assert (report["calls"], report["cached"], report["unparsed"]) == (9, 0, 0)
    written = read_json(tmp_path / "out" / "judge.json")
    assert written["score"] == report["score"]
    assert len((tmp_path / "out" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()) == 9


def test_patient_phone_numbers_are_masked_before_the_judge_sees_them(tmp_path):
    prompts = load_rubrics(RUBRICS)
    with ScriptedJudge(keyword_rubric) as server:
        run_rubric(prompts, load_answers(ANSWERS, prompts), "answers", judge_for(server, tmp_path / "cache"), tmp_path / "out")
        sent = json.dumps(server.requests, ensure_ascii=False)
    assert "13812345678" not in sent and "[电话]" in sent


def test_a_rerun_makes_no_calls(tmp_path):
    prompts = load_rubrics(RUBRICS)
    answers = load_answers(ANSWERS, prompts)
    with ScriptedJudge(keyword_rubric) as server:
        first = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "cache"), tmp_path / "out")
        again = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "cache"), tmp_path / "out2")
        assert server.calls == 9
    assert (again["calls"], again["cached"]) == (0, 9) and again["score"] == first["score"]


def test_an_unparsed_reply_is_retried_once_then_counted(tmp_path):
    prompts = load_rubrics(RUBRICS)

    prose_once = {"[[120]]"}

    def script(content: str, number: int) -> str:
        if "[[休息]]" in content:  # one criterion always gets prose
            return "I think the answer is good."
        if "[[120]]" in content and prose_once:  # another gets prose once, then JSON
            prose_once.clear()
            return "hmm"
        return keyword_rubric(content, number)

    with ScriptedJudge(script) as server:
        report = run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge_for(server, tmp_path / "cache"), tmp_path / "out")
        assert server.calls == 9 + 2  # each reply that did not parse was asked once more
    assert report["unparsed"] == 1 and report["left_out_unparsed"] == ["hb-1"]
    assert report["n"] == 2 and report["score"] == 0.0  # hb-2 -1.0 and hb-3 0.2: a negative mean, clipped
    rows = [json.loads(line) for line in (tmp_path / "out" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["criterion"] for row in rows if row["unparsed"]] == ["建议休息 [[休息]]"]


@pytest.mark.slow  # waits out a client timeout
def test_429_then_success_and_a_timeout_are_retried(tmp_path):
    prompts = load_rubrics(RUBRICS)[:1]
    faults = {1: Fault(status=429), 2: Fault(status=503)}

    def script(content: str, number: int):
        return faults.get(number) or keyword_rubric(content, number)

    with ScriptedJudge(script) as server:
        report = run_rubric(
            prompts,
            load_answers(ANSWERS, load_rubrics(RUBRICS)),
            "a",
            judge_for(server, tmp_path / "c1", concurrency=1),
            tmp_path / "o1",
        )
        assert server.calls == 3 + 2  # 3 criteria, 2 of the calls answered 429 / 503 first
    assert report["score"] == 1.0 and report["unparsed"] == 0

    def slow_once(content: str, number: int):
        return Fault(delay_s=3.0, reply=keyword_rubric(content, number)) if number == 1 else keyword_rubric(content, number)

    with ScriptedJudge(slow_once) as server:
        judge = judge_for(server, tmp_path / "c2", concurrency=1, timeout_s=1.0, retries=2)
        report = run_rubric(prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge, tmp_path / "o2")
    assert report["score"] == 1.0


def test_a_judge_that_stays_down_fails_in_one_line(tmp_path):
    prompts = load_rubrics(RUBRICS)[:1]
    with ScriptedJudge(lambda content, number: Fault(status=500)) as server:
        judge = judge_for(server, tmp_path / "cache", retries=1, concurrency=1)
        with pytest.raises(UserError, match=r"failed 2 time\(s\) in a row \(500: .*rerun to resume"):
            run_rubric(prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge, tmp_path / "out")
        assert server.calls == 2  # the tries the message counts, no more


def test_pairwise_through_the_client_both_orders_and_ties(tmp_path):
    from caretune.evaluation.pairwise import run_pairwise

    rows = [([{"role": "user", "content": f"问题{i}"}], "参考", "") for i in range(6)]

    def answer(recipe, conversations):  # tuned answers hold 好 on even questions; base never
        if recipe == "base.yaml":
            return [f"普通回答{i}" for i in range(len(conversations))]
        return [f"好的回答，说得更详细{i}" if i % 2 == 0 else f"另一种回答{i}" for i in range(len(conversations))]

    recipes = {"base": "base.yaml", "tuned": "tuned.yaml"}
    with ScriptedJudge(prefers("好")) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c1"), tmp_path / "fair")
        assert server.calls == 12  # both orders of 6 pairs
    assert (report["win"], report["tie"], report["loss"]) == (3, 3, 0)
    with ScriptedJudge(position_biased) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c2"), tmp_path / "biased")
    assert (report["win"], report["tie"], report["loss"]) == (0, 6, 0)  # a judge that always picks A decides nothing
    assert report["mean_answer_chars"]["tuned"] > report["mean_answer_chars"]["base"]


@slow_cli
def test_the_cli_refuses_a_remote_judge_and_a_dead_one_before_any_call(tmp_path):
    args = ["judge", "rubric", RUBRICS, "--answers", ANSWERS, "--judge-model", "m", "--out", tmp_path / "out"]
    remote = run_caretune(tmp_path, *args, "--judge-url", "https://judge.example.org/v1", timeout=60)
    assert remote.returncode == 1 and "--allow-remote-judge" in remote.stderr and len(remote.stderr.strip().splitlines()) == 1
    started = time.monotonic()
    dead = run_caretune(tmp_path, *args, "--judge-url", "http://127.0.0.1:9/v1", timeout=60)
    assert dead.returncode == 1 and "not reachable" in dead.stderr and len(dead.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@slow_cli
def test_a_killed_run_resumes_without_asking_again(tmp_path):
    """The judge answers slowly; the run is killed part-way; the rerun asks only what was not answered."""
    with ScriptedJudge(lambda content, number: Fault(delay_s=0.4, reply=keyword_rubric(content, number))) as server:
        args = ["judge", "rubric", RUBRICS, "--answers", ANSWERS, "--judge-url", server.url, "--judge-model", "scripted"]
        args += ["--concurrency", "1", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out"]
        from tests.helpers import start_caretune

        process = start_caretune(tmp_path, *args)
        deadline = time.monotonic() + 60
        while server.calls < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        asked_before = server.calls
        cached = len((tmp_path / "cache" / "scripted.jsonl").read_text(encoding="utf-8").splitlines())
        assert 0 < cached < 9
        rerun = run_caretune(tmp_path, *args, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert server.calls - asked_before == 9 - cached
    report = read_json(tmp_path / "out" / "judge.json")
    assert report["cached"] == cached and report["calls"] == 9 - cached
    assert report["score"] == pytest.approx(0.0667, abs=1e-4)


def test_judge_help_lists_its_modes():
    result = subprocess.run([sys.executable, "-m", "caretune.cli", "judge", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and all(mode in result.stdout for mode in ("rubric", "pairwise", "calibrate"))


def test_the_shipped_chinese_rubric_set_is_valid_and_covers_the_harms():
    from caretune.evaluation.rubric import SHIPPED_RUBRICS

    prompts = load_rubrics(SHIPPED_RUBRICS)
    themes = [p.tags for p in prompts]
    assert themes.count(("theme:emergency",)) == 22 and themes.count(("theme:consultation",)) >= 40
    assert all(3 <= len(p.criteria) <= 8 and any(c.points < 0 for c in p.criteria) for p in prompts)
    harms = " ".join(c.text for p in prompts for c in p.criteria if c.points < 0)
    for harm in ("确定的诊断", "具体剂量", "人工智能", "截断", "矛盾"):
        assert harm in harms


# --- reasoning judges and endpoints that answer oddly ------------------------------------------------------------


def test_a_reasoning_reply_is_read_strictly():
    """After a leading reasoning block, exactly one verdict: a draft before the final one is ambiguous, never read."""
    field, allowed = "criteria_met", (True, False)
    think_then_final = (
        '<think>\nFirst draft:\n```json\n{"criteria_met": false, "explanation": "draft"}\n```\nHmm, {not json} — no, '
        "it does mention the doctor.\n</think>\n\n"
        '```json\n{"explanation": "mentions a doctor", "criteria_met": true}\n```'
    )
    assert parse_reply(think_then_final, field, allowed) == {"criteria_met": True, "explanation": "mentions a doctor"}
    assert read_verdict('<think>{"criteria_met": true}', field, allowed) == (None, "the reply never left its reasoning block")
    two = '{"criteria_met": false} then, on reflection, {"criteria_met": true, "explanation": "final"}'
    assert parse_reply(two, field, allowed) is None  # which one? neither is read
    fenced_twice = '```json\n{"criteria_met": true}\n```\n```json\n{"criteria_met": false}\n```'
    assert read_verdict(fenced_twice, field, allowed)[1].startswith("ambiguous")
    quoted = '{"criteria_met": true, "explanation": "回答里写了<think>却没有闭合"}'  # a tag inside a string is text
    assert parse_reply(quoted, field, allowed)["criteria_met"] is True
    assert parse_reply('{"verdict": {"criteria_met": true}}', field, allowed) is None  # never read from inside


def test_a_reasoning_judge_over_http_scores_by_its_final_verdict(tmp_path):
    """The probe's case: a draft verdict inside <think>, then the true one. Before, the draft was read (0.000)."""
    prompts = load_rubrics(RUBRICS)

    def thinking(content: str, number: int) -> str:
        final = keyword_rubric(content, number)
        draft = json.dumps({"criteria_met": not json.loads(final)["criteria_met"], "explanation": "draft"})
        return f"<think>\n```json\n{draft}\n```\nLet me check again {{...}}.\n</think>\n\n```json\n{final}\n```"

    with ScriptedJudge(thinking) as server:
        report = run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert {body["max_tokens"] for body in server.requests} == {4096}  # room for the thinking
    assert report["score"] == pytest.approx(0.0667, abs=1e-4) and report["unparsed"] == 0


def test_a_reply_cut_at_max_tokens_is_unparsed_with_its_reason_and_not_asked_again(tmp_path):
    prompts = load_rubrics(RUBRICS)[:1]
    cut = Fault(reply="<think>\nThe answer says 医生, but", finish_reason="length")
    with ScriptedJudge(lambda content, number: cut if "[[医生]]" in content else keyword_rubric(content, number)) as server:
        judge = judge_for(server, tmp_path / "c", concurrency=1)
        report = run_rubric(prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge, tmp_path / "o")
        assert server.calls == 3  # cut once: asking again would cut again
    rows = [json.loads(line) for line in (tmp_path / "o" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["why"] for row in rows if row["unparsed"]] == ["cut at max_tokens (4096): raise --judge-max-tokens"]
    assert report["unparsed"] == 1 and report["left_out_unparsed"] == ["hb-1"]


@pytest.mark.parametrize(
    ("body", "content_type", "shown"),
    [
        (b"<html><body>Proxy login</body></html>", "text/html", "text/html, '<html><body>Proxy login</body></html>'"),
        (b'{"choices": ', "application/json", "'{\"choices\":'"),
        (b"\xff\xfe\x00bad", "application/json", "not UTF-8"),
        (b'{"choices": "oops"}', "application/json", "without choices[0].message.content"),
    ],
)
def test_a_200_that_is_not_a_chat_completion_stops_in_one_line(tmp_path, body, content_type, shown):
    prompts = load_rubrics(RUBRICS)[:1]
    with ScriptedJudge(lambda content, number: Fault(body=body, content_type=content_type)) as server:
        with pytest.raises(UserError) as raised:
            run_rubric(
                prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge_for(server, tmp_path / "c"), tmp_path / "o"
            )
        message = str(raised.value)
        assert message.startswith(f"judge {server.url} answered 200 with something that is not a chat completion")
        assert shown in message and "\n" not in message
    with ScriptedJudge(keyword_rubric, models=Fault(body=body, content_type=content_type)) as server:
        with pytest.raises(UserError, match=r"answered /models with something that is not an OpenAI model list"):
            judge_for(server, tmp_path / "c").check_reachable()


def test_a_400_fails_that_verdict_and_the_run_goes_on_and_a_rerun_asks_it_again(tmp_path):
    """A 100 KB answer behind a small-context judge: before, the deterministic 400 stopped every rerun."""
    prompts = load_rubrics(RUBRICS)
    answers = load_answers(ANSWERS, prompts)
    too_long = {"down": True}

    def script(content: str, number: int):
        if "[[急诊]]" in content and too_long["down"]:
            return Fault(status=400)
        return keyword_rubric(content, number)

    with ScriptedJudge(script) as server:
        report = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert server.calls == 9  # the 400 was not tried again
        assert (report["failed"], report["unparsed"], report["left_out_unparsed"]) == (1, 0, ["hb-2"])
        rows = [json.loads(line) for line in (tmp_path / "o" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [row["failed"] for row in rows if row["failed"]] == ["400: Error code: 400 - scripted fault 400"]
        too_long["down"] = False
        again = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "c"), tmp_path / "o2")
        assert server.calls == 10 and (again["calls"], again["cached"]) == (1, 8)  # only the failed verdict is asked
    assert again["failed"] == 0 and again["score"] == pytest.approx(0.0667, abs=1e-4)


@pytest.mark.parametrize(("status", "said"), [(401, "refused the key"), (403, "forbids"), (404, "has no such model")])
def test_401_403_404_stop_the_run_in_one_line_without_retrying(tmp_path, status, said):
    prompts = load_rubrics(RUBRICS)[:1]
    with ScriptedJudge(lambda content, number: Fault(status=status)) as server:
        judge = judge_for(server, tmp_path / "c", concurrency=1, retries=3)
        with pytest.raises(UserError, match=rf"{said}.* \({status}: ") as raised:
            run_rubric(prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge, tmp_path / "o")
        assert server.calls == 1 and "\n" not in str(raised.value)


def test_verdicts_answered_while_another_call_fails_are_cached(tmp_path):
    prompts = load_rubrics(RUBRICS)
    answered = []

    def script(content: str, number: int):
        if "[[120]]" in content:
            return Fault(status=503, delay_s=0.3)
        answered.append(number)
        return Fault(delay_s=0.2, reply=keyword_rubric(content, number))

    with ScriptedJudge(script) as server:
        with pytest.raises(UserError, match="verdicts so far are cached"):
            run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge_for(server, tmp_path / "c", retries=0), tmp_path / "o")
    cached = (tmp_path / "c" / "scripted.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(answered) >= 3 and len(cached) == len(answered)  # every verdict the judge gave is on disk


def test_unparsed_verdicts_are_asked_again_and_bad_cache_entries_are_skipped(tmp_path):
    prompts = load_rubrics(RUBRICS)
    answers = load_answers(ANSWERS, prompts)
    prose = {"on": True}

    def script(content: str, number: int) -> str:
        return "no verdict here" if "[[休息]]" in content and prose["on"] else keyword_rubric(content, number)

    with ScriptedJudge(script) as server:
        first = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert first["unparsed"] == 1 and server.calls == 10
        prose["on"] = False
        cache = tmp_path / "c" / "scripted.jsonl"
        lines = cache.read_text(encoding="utf-8").splitlines()
        damaged = json.loads(lines[0])
        damaged["verdict"]["criteria_met"] = "false"  # a string: it once counted as met
        cache.write_text("\n".join([json.dumps(damaged), *lines[1:], "{torn", '{"key": 1}']) + "\n", encoding="utf-8")
        again = run_rubric(prompts, answers, "a", judge_for(server, tmp_path / "c"), tmp_path / "o2")
        assert server.calls == 12  # the unparsed verdict and the damaged entry's, nothing else
    assert (again["calls"], again["cached"], again["unparsed"], again["bad_cache_entries"]) == (2, 7, 0, 3)
    assert again["score"] == pytest.approx(0.0667, abs=1e-4)


def test_criteria_are_masked_and_a_url_with_a_password_is_refused(tmp_path):
    prompts = load_rubrics(
        write_lines(
            tmp_path / "r.jsonl",
            [
                json.dumps(
                    {
                        "prompt_id": "p",
                        "prompt": [{"role": "user", "content": "头疼"}],
                        "rubrics": [{"criterion": "建议拨打 13912345678 或写信 a.b@example.com [[医生]]", "points": 1}],
                    },
                    ensure_ascii=False,
                )
            ],
        )
    )
    with ScriptedJudge(keyword_rubric) as server:
        run_rubric(prompts, {"p": "看医生"}, "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        sent = json.dumps(server.requests, ensure_ascii=False)
    assert "13912345678" not in sent and "a.b@example.com" not in sent
    with pytest.raises(UserError, match="carries a user name or password.*JUDGE_API_KEY"):
        remote_warning("http://user:secret@127.0.0.1:8000/v1", allow_remote=False)


def test_prompts_without_positive_points_are_listed_and_never_asked(tmp_path):
    rows = [
        {
            "prompt_id": "harm-only",
            "prompt": [{"role": "user", "content": "x"}],
            "rubrics": [{"criterion": "[[坏]]", "points": -3}],
        },
        {
            "prompt_id": "ok",
            "prompt": [{"role": "user", "content": "y"}],
            "rubrics": [{"criterion": "[[好]]", "points": 2, "tags": ["axis:x", "theme:t"]}],
            "example_tags": ["theme:t", "theme:t"],
        },
    ]
    prompts = load_rubrics(write_lines(tmp_path / "r.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows]))
    with ScriptedJudge(keyword_rubric) as server:
        report = run_rubric(prompts, {"harm-only": "坏", "ok": "好"}, "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert server.calls <= 3  # the prompt's criteria, asked at once; none asked again (--retries 0)
    assert report["skipped"] == [{"prompt_id": "harm-only", "reason": "no criterion with positive points: nothing to earn"}]
    assert report["by_tag"]["theme:t"]["n"] == 1  # a tag repeated on one example (and on its criterion) counts once
    assert report["by_tag"]["axis:x"]["n"] == 1 and report["n"] == 1


def test_the_grader_prompts_carry_the_examples_rule_and_their_version_keys_the_cache(monkeypatch):
    from caretune.evaluation import judge as judge_module
    from caretune.evaluation.grader_prompts import RUBRIC
    from caretune.evaluation.rubric import criterion_call

    assert "such as" in RUBRIC["en"] and "for example" in RUBRIC["en"] and "including" in RUBRIC["en"]
    assert "例如" in RUBRIC["zh"] and "包括" in RUBRIC["zh"] and "等" in RUBRIC["zh"]
    call = criterion_call(({"role": "user", "content": "x"},), "y", Criterion("c", 1, ()), "en")
    assert call.messages[0]["content"].startswith(RUBRIC["en"])
    assert criterion_call(({"role": "user", "content": "x"},), "y", Criterion("c", 1, ()), "zh").key("m") != call.key("m")
    before = call.key("m")
    monkeypatch.setattr(judge_module, "GRADER_VERSION", "next")
    assert call.key("m") != before


# --- length-aware pairwise ---------------------------------------------------------------------------------------


def _pairs(count: int):
    rows = [([{"role": "user", "content": f"问题{i}"}], "参考", "") for i in range(count)]

    def answer(recipe, conversations):  # tuned is longer on 4 questions of 5, and never better otherwise
        if recipe == "base.yaml":
            return ["基" * (100 + 7 * i) for i in range(len(conversations))]
        return ["调" * (100 + 7 * i + (60 + 3 * i if i % 5 else -(40 + i))) for i in range(len(conversations))]

    return rows, answer, {"base": "base.yaml", "tuned": "tuned.yaml"}


def longer_wins(content: str, _: int) -> str:
    """A judge that prefers the longer answer, whatever it says."""
    a, b = len(section(content, "answer_A")), len(section(content, "answer_B"))
    return json.dumps({"winner": "A" if a > b else "B" if b > a else "tie", "explanation": "longer"})


def test_a_length_biased_judge_does_not_crown_the_verbose_model(tmp_path):
    """A judge that prefers only the longer answer: the tuned one is longer in 80% of the pairs. The fit once
    reported 0.655 here (true preference at equal length: 0.5); length sorts every win from every loss, so the
    controlled rate is withheld with the reason, and the raw and length-matched rates stand."""
    from caretune.evaluation.pairwise import run_pairwise

    rows, answer, recipes = _pairs(60)
    with ScriptedJudge(longer_wins) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c"), tmp_path / "o", sample=60)
    controlled = report["length_controlled"]
    assert report["shares"]["win"] == 0.8 and controlled["raw_win_rate"] == 0.8  # raw: the longer model wins
    assert controlled["win_rate"] is None and "the fit separates" in controlled["withheld"]
    assert controlled["raw_ci"][0] < 0.8 < controlled["raw_ci"][1]

    def fair(content: str, number: int) -> str:  # prefers the base answer's letter 基 whatever the length
        return prefers("基")(content, number)

    with ScriptedJudge(fair) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c2"), tmp_path / "o2", sample=60)
    assert report["length_controlled"]["raw_win_rate"] == 0.0 and report["length_controlled"]["win_rate"] < 0.2


def test_length_controlled_fit_by_hand():
    from caretune.evaluation.pairwise import length_control
    from caretune.evaluation.stats import fit_length_logistic

    a, b = fit_length_logistic([1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])  # no length difference: a is the raw log-odds
    assert a == pytest.approx(0.0, abs=1e-6) and b == pytest.approx(0.0, abs=1e-6)
    a, _ = fit_length_logistic([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert a == pytest.approx(math.log(3), abs=1e-4)  # no ridge on the model term: not pulled toward 50%
    same_length = length_control(["tuned", "tuned", "tuned", "base"], [100] * 4, [100] * 4)
    assert same_length["raw_win_rate"] == 0.75 and same_length["length_matched"]["judged"] == 4
    assert same_length["win_rate"] is None and "shorter in 0% and longer in 0%" in same_length["withheld"]


def _simulated(n: int, seed: int, longer_share: float, judge) -> dict:
    """n pairs of simulated lengths (the tuned answer longer in `longer_share` of them) judged by `judge(b, t)`, the
    probability the tuned answer wins."""
    import random

    from caretune.evaluation.pairwise import length_control

    rng = random.Random(seed)
    lengths = []
    for _ in range(n):
        base, gap = rng.randint(150, 450), rng.randint(20, 200)
        lengths.append((base, base + gap if rng.random() < longer_share else max(20, base - gap)))
    results = ["tuned" if rng.random() < judge(b, t) else "base" for b, t in lengths]
    return length_control(results, [b for b, _ in lengths], [t for _, t in lengths], seed=seed)


@pytest.mark.slow  # 60 bootstrapped fits: 13 s
@pytest.mark.parametrize("n", [30, 200])
def test_simulated_judges_where_the_truth_is_known(n):
    """benchmarks/length_control_sim.py runs each case 200 times (the table: evaluation README); here 10 seeds, held
    to somewhat less than what the 200 runs measured, so the test says what holds, not what one seed happened to do."""

    def sigmoid(value: float) -> float:
        return 1 / (1 + math.exp(-value))

    seeds = range(10)
    always_longer = [_simulated(n, seed, 1.0, lambda b, t: 1.0 if t > b else 0.0) for seed in seeds]  # length only
    assert all(run["win_rate"] is None and "under 10% on one side" in run["withheld"] for run in always_longer)
    seventy = [_simulated(n, seed, 0.5, lambda b, t: 0.7) for seed in seeds]  # 70% at equal length
    assert abs(sum(run["win_rate"] for run in seventy) / len(seventy) - 0.7) < 0.05
    assert sum(run["ci"][0] <= 0.7 <= run["ci"][1] for run in seventy) >= 7
    if n == 200:
        assert sum(run["ci"][0] > 0.5 for run in seventy) >= 9  # the interval excludes 0.5
    mixed = [
        _simulated(n, seed, 0.8, lambda b, t: sigmoid(math.log(1.5) + 1.5 * math.tanh((t - b) / 120))) for seed in seeds
    ]  # 60% at equal length, pulled by length, the tuned answer longer in 80%
    shown = [run for run in mixed if run["win_rate"] is not None]
    assert len(shown) >= 8 and sum(run["ci"][0] <= 0.6 <= run["ci"][1] for run in shown) >= len(shown) - 2


# --- calibration against physicians ------------------------------------------------------------------------------

META = HAND / "healthbench_meta_eval_hand.jsonl"


def test_calibrate_reads_healthbench_meta_eval_rows_and_agrees_pairwise_by_hand(tmp_path):
    from caretune.evaluation.calibration import load_labels, run_calibration

    labels = load_labels(META)
    assert [len(label.labels) for label in labels] == [3, 2, 1, 1] and labels[0].criterion.points is None
    with ScriptedJudge(keyword_rubric) as server:
        report = run_calibration(labels, str(META), judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert server.calls == 4
        prompts = [request["messages"][0]["content"] for request in server.requests]  # in any order: calls run at once
        by_criterion = {c: [p for p in prompts if c in p] for c in ("建议必要时就医", "让用户立即拨打", "建议做", "提醒咨询")}
        assert all(len(found) == 1 for found in by_criterion.values()), by_criterion
        for criterion in ("建议必要时就医", "让用户立即拨打", "建议做"):  # the meta-evaluation gives no points
            assert 'points="' not in by_criterion[criterion][0]
        assert 'points="5"' in by_criterion["提醒咨询"][0]  # caretune's own format does
    # judge: met, not met, met, not met; pairs (physician, judge): line 1 (T,T)(T,T)(F,T); line 2 (F,F)(T,F);
    # line 3 (caretune format) (T,T); line 4 (F,F)
    assert report["n"] == 7 and report["agreement"] == pytest.approx(5 / 7, abs=1e-4)
    assert report["confusion"] == {"both_met": 3, "both_not_met": 2, "judge_only_met": 1, "label_only_met": 1}
    # F1(met) = 2*3 / (4 + 4) = 0.75; F1(not met) = 2*2 / (3 + 3) = 0.6667
    assert report["macro_f1"] == pytest.approx((0.75 + 2 / 3) / 2, abs=1e-4)
    among = report["physicians_among_themselves"]  # line 1: 6 ordered pairs, 2 agree; line 2: 2 pairs, none agree
    assert among["n"] == 8 and among["agreement"] == pytest.approx(2 / 8, abs=1e-4)
    assert set(report["by_category"]) == {"cluster_a", "cluster_b", "uncategorised"}


def test_a_calibration_line_in_neither_format_names_its_line(tmp_path):
    from caretune.evaluation.calibration import load_labels

    path = write_lines(
        tmp_path / "l.jsonl",
        ['{"prompt": [{"role": "user", "content": "x"}], "completion": "y", "rubric": "z", "binary_labels": []}'],
    )
    with pytest.raises(UserError, match=r"l\.jsonl:1: `binary_labels` must be a non-empty list"):
        load_labels(path)


@slow_cli
def test_the_cli_says_one_line_for_a_proxy_page_and_fails_when_nothing_parsed(tmp_path):
    args = ["judge", "rubric", RUBRICS, "--answers", ANSWERS, "--judge-model", "scripted", "--cache-dir", tmp_path / "c"]
    html = Fault(body=b"<html>Sign in to the proxy</html>", content_type="text/html")
    with ScriptedJudge(lambda content, number: html) as server:
        done = run_caretune(tmp_path, *args, "--judge-url", server.url, "--out", tmp_path / "o1", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "not a chat completion: text/html" in done.stderr
    with ScriptedJudge(lambda content, number: "I would say it is fine.") as server:
        done = run_caretune(tmp_path, *args, "--judge-url", server.url, "--out", tmp_path / "o2", timeout=120)
    assert done.returncode == 1 and "the judge gave no usable verdict (9 unparsed, 0 failed of 9)" in done.stderr, done.stderr
    assert (tmp_path / "o2" / "verdicts.jsonl").exists()  # written for a look before the exit


# --- found by review: cut drafts, odd usage, crashes mid-run, odd URLs, pairwise failures -------------------------


def test_a_cut_reply_without_think_tags_is_never_read_for_a_draft(tmp_path):
    """Templates that open the think block in the prompt give replies with only the closing tag; one cut while still
    thinking holds a draft verdict that must not count."""
    assert (
        parse_reply('draft {"criteria_met": true} no...</think>\nThe answer does not meet it.', "criteria_met", (True, False))
        is None
    )
    prompts = load_rubrics(RUBRICS)[:1]
    cut = Fault(reply='Okay. Draft: {"criteria_met": false}. Hmm, wait, actually the answer', finish_reason="length")
    with ScriptedJudge(lambda content, number: cut if "[[医生]]" in content else keyword_rubric(content, number)) as server:
        report = run_rubric(
            prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge_for(server, tmp_path / "c"), tmp_path / "o"
        )
    assert report["unparsed"] == 1 and len((tmp_path / "c" / "scripted.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_odd_usage_counts_are_ignored_not_a_crash(tmp_path):
    prompts = load_rubrics(RUBRICS)[:1]

    with ScriptedJudge(keyword_rubric) as server:
        judge = judge_for(server, tmp_path / "c")
        import caretune.evaluation.judge as judge_module

        original = judge_module.completion_text

        def odd(body, content_type, url):
            text, finish, _ = original(body, content_type, url)
            return text, finish, {"prompt_tokens": "12", "completion_tokens": True}

        judge_module.completion_text = odd
        try:
            report = run_rubric(prompts, load_answers(ANSWERS, load_rubrics(RUBRICS)), "a", judge, tmp_path / "o")
        finally:
            judge_module.completion_text = original
    assert report["usage"] == {"prompt_tokens": 0, "completion_tokens": 0} and report["unparsed"] == 0


def test_an_unexpected_error_in_one_call_starts_no_more_calls(tmp_path, monkeypatch):
    prompts = load_rubrics(RUBRICS)
    with ScriptedJudge(lambda content, number: Fault(delay_s=0.1, reply=keyword_rubric(content, number))) as server:
        judge = judge_for(server, tmp_path / "c", concurrency=1)

        def disk_full(key, verdict):
            raise OSError("No space left on device")

        monkeypatch.setattr(judge.cache, "put", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge, tmp_path / "o")
        assert server.calls == 1  # before, every queued call still ran


def test_a_stopped_run_does_not_keep_retrying_elsewhere(tmp_path):
    prompts = load_rubrics(RUBRICS)

    def script(content: str, number: int):
        return Fault(status=401, delay_s=0.2) if "[[医生]]" in content else Fault(status=503)

    with ScriptedJudge(script) as server:
        judge = judge_for(server, tmp_path / "c", retries=20, concurrency=4)
        with pytest.raises(UserError, match="refused the key"):
            run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge, tmp_path / "o")
        assert server.calls < 40  # 503s with 20 retries each would have gone on past the 401


@pytest.mark.parametrize("url", ["http://[::1/v1", "http://127.0.0.1:abc/v1"])
def test_a_url_that_does_not_parse_is_one_line(url):
    with pytest.raises(UserError, match="not a URL"):
        remote_warning(url, allow_remote=False)


def test_pairwise_counts_failed_pairs_apart_from_unparsed_ones(tmp_path):
    from caretune.evaluation.pairwise import run_pairwise

    rows, answer, recipes = _pairs(3)
    with ScriptedJudge(lambda content, number: Fault(status=400)) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c"), tmp_path / "o", sample=3)
    assert (report["failed_pairs"], report["failed"], report["unparsed"], report["judged"]) == (3, 6, 0, 0)
    rows_out = [json.loads(line) for line in (tmp_path / "o" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(not row["unparsed"] and row["failed"][0].startswith("400:") for row in rows_out)


# --- general prompts: forgetting in free answers ---------------------------------------------------------------


def test_the_general_prompts_are_judged_pairwise_with_the_general_grader(tmp_path):
    from caretune.evaluation.grader_prompts import PAIRWISE_GENERAL
    from caretune.evaluation.pairwise import GENERAL_PROMPTS, general_rows, run_pairwise

    lines = [json.loads(line) for line in GENERAL_PROMPTS.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 30 and {line["kind"] for line in lines} == {"writing", "reasoning", "knowledge", "everyday"}
    assert not any(mark in line["prompt"] for line in lines for mark in ("医", "病", "药", "症", "健康"))  # no medical content
    rows = general_rows()
    recipes = {"base": "base.yaml", "tuned": "tuned.yaml"}
    seen_systems = []

    def answer(recipe, conversations):
        seen_systems.extend(system for _, system in conversations)
        return [("好" if recipe == "tuned.yaml" else "一般") + str(i) for i in range(len(conversations))]

    with ScriptedJudge(prefers("好")) as server:
        report = run_pairwise(rows, answer, recipes, judge_for(server, tmp_path / "c"), tmp_path / "o", sample=30, general=True)
        assert all(body["messages"][0]["content"].startswith(PAIRWISE_GENERAL["zh"]) for body in server.requests)
    assert report["questions"] == "general prompts" and (report["win"], report["judged"]) == (30, 30)
    from caretune.constants import MEDICAL_SYSTEM_PROMPT

    assert set(seen_systems) == {MEDICAL_SYSTEM_PROMPT}  # answered under the served prompt, base and tuned alike


ADVERSARIAL = {
    # the right fenced verdict, then prose with a hypothetical opposite object
    "hypothetical": lambda final, opposite: f"```json\n{final}\n```\n如果回答没有提到这一点，结论就应为 {opposite}",
    # a draft, then the final verdict whose explanation quotes <think>
    "draft then final": lambda final, opposite: (
        f'```json\n{opposite}\n```\n再想想。\n```json\n{final[:-1]}, "note": "<think>"}}\n```'
    ),
    # an invalid outer object holding a valid inner one
    "inner object": lambda final, opposite: json.dumps({"verdict": json.loads(final)}),
}


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
def test_an_adversarial_reply_is_never_scored_and_the_second_ask_differs(tmp_path, kind):
    """Each reply above once changed a score (the hypothetical: 0.075 where the final verdicts give 0.225). Read
    strictly, it is ambiguous or no verdict: asked again once with the reply sent back and a format reminder, then
    unparsed, never scored and never cached."""
    prompts = load_rubrics(RUBRICS)

    def script(content: str, number: int) -> str:
        final = keyword_rubric(content, number)
        opposite = json.dumps({"criteria_met": not json.loads(final)["criteria_met"], "explanation": "假设"})
        return ADVERSARIAL[kind](final, opposite)

    with ScriptedJudge(script) as server:
        report = run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        assert server.calls == 2 * 9  # every verdict asked twice
        second = [body for body in server.requests if len(body["messages"]) > 2]
        assert len(second) == 9 and all(body["messages"][-1]["content"].startswith("Your reply did not") for body in second)
        assert all(body["messages"][-2]["role"] == "assistant" for body in second)  # the reply sent back: a new request
    assert report["unparsed"] == 9 and report["n"] == 0
    cache = tmp_path / "c" / "scripted.jsonl"
    assert not cache.exists() or not cache.read_text(encoding="utf-8").strip()  # nothing unparsed is cached


def test_an_explanation_quoting_an_unclosed_think_is_read(tmp_path):
    """Before, every such verdict was unparsed (11 of 11) and whole prompts dropped out of the score."""
    prompts = load_rubrics(RUBRICS)

    def script(content: str, number: int) -> str:
        verdict = json.loads(keyword_rubric(content, number))
        return json.dumps({**verdict, "explanation": "回答中出现了 <think> 标签但没有闭合"}, ensure_ascii=False)

    with ScriptedJudge(script) as server:
        report = run_rubric(prompts, load_answers(ANSWERS, prompts), "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
    assert report["unparsed"] == 0 and report["score"] == pytest.approx(0.0667, abs=1e-4)


def test_a_trickled_reply_is_cut_at_the_calls_deadline(tmp_path):
    """A reply sent one byte every 0.2 s held one call for 69 s against --timeout 3 --retries 0: the timeout bounded
    each read, not the call. Now the call ends at its deadline, and --retries applies to it."""
    import time

    prompts = load_rubrics(RUBRICS)[:1]
    slow = Fault(reply=json.dumps({"criteria_met": True, "explanation": "x" * 60}), trickle_s=0.2)
    with ScriptedJudge(lambda content, number: slow) as server:
        started = time.monotonic()
        with pytest.raises(UserError, match=r"failed 1 time\(s\) in a row \(no whole reply within --timeout 3s"):
            run_rubric(
                prompts,
                load_answers(ANSWERS, prompts),
                "a",
                judge_for(server, tmp_path / "c", timeout_s=3, retries=0),
                tmp_path / "o",
            )
        assert time.monotonic() - started < 6
        assert server.calls <= 3  # the prompt's criteria, asked at once; none asked again (--retries 0)


def test_landlines_and_full_width_numbers_reach_no_judge(tmp_path):
    """A landline and full-width digits in a criterion, the prompt and the answer were sent as written."""
    row = {
        "prompt_id": "p",
        "prompt": [{"role": "user", "content": "我的电话是０１０－６２３４５６７８，头疼怎么办"}],
        "rubrics": [{"criterion": "建议拨打 010-62345678 或 １３９ １２３４ ５６７８ 联系 [[医生]]", "points": 1}],
    }
    prompts = load_rubrics(write_lines(tmp_path / "r.jsonl", [json.dumps(row, ensure_ascii=False)]))
    with ScriptedJudge(keyword_rubric) as server:
        run_rubric(prompts, {"p": "看医生，或打 0755 8234 5678"}, "a", judge_for(server, tmp_path / "c"), tmp_path / "o")
        sent = json.dumps(server.requests, ensure_ascii=False)
    for number in ("62345678", "６２３４５６７８", "５６７８", "8234 5678"):
        assert number not in sent, number
    assert sent.count("[电话]") >= 4


@pytest.mark.parametrize("query", ["api_key=SECRET", "key=SECRET", "token=SECRET", "access_token=SECRET", "sig=SECRET"])
def test_a_key_in_the_urls_query_is_refused(query):
    with pytest.raises(UserError, match=r"carries a secret in its query \(\w+=…\): remove it and put the key in JUDGE_API_KEY"):
        remote_warning(f"http://127.0.0.1:8001/v1?{query}", allow_remote=False)


def test_records_keep_the_url_without_its_query(tmp_path):
    with ScriptedJudge(keyword_rubric) as server:
        judge = Judge(Endpoint(url=server.url + "?api-version=2024-06-01", model="scripted"), tmp_path / "c")
        assert judge.summary()["judge"]["url"] == server.url
        assert remote_warning(server.url + "?api-version=2024-06-01", allow_remote=False) is None  # not a secret


def test_pairwise_judges_answers_made_elsewhere(tmp_path):
    """`judge pairwise --answers BASE TUNED`: JSON Lines from vLLM, another stack or a vendor model; the prompts both
    files answer are judged in both orders, the others listed; a bad line is one error naming it."""
    from click.testing import CliRunner

    from caretune.cli import main

    base = write_lines(
        tmp_path / "base.jsonl",
        [
            json.dumps({"prompt_id": "q1", "prompt": "头疼怎么办？", "response": "多休息。"}, ensure_ascii=False),
            json.dumps(
                {"prompt_id": "q2", "prompt": [{"role": "user", "content": "发烧了"}], "response": "多喝水。"}, ensure_ascii=False
            ),
            json.dumps({"prompt_id": "q3", "prompt": "咳嗽", "response": "观察。"}, ensure_ascii=False),
        ],
    )
    tuned = write_lines(
        tmp_path / "tuned.jsonl",
        [
            json.dumps(
                {"prompt_id": "q1", "prompt": "头疼怎么办？", "response": "多休息，持续不缓解请看医生。"}, ensure_ascii=False
            ),
            json.dumps(
                {"prompt_id": "q2", "prompt": [{"role": "user", "content": "发烧了"}], "response": "多喝水，高烧请看医生。"},
                ensure_ascii=False,
            ),
            json.dumps({"prompt_id": "q4", "prompt": "失眠", "response": "规律作息。"}, ensure_ascii=False),
        ],
    )
    with ScriptedJudge(prefers("医生")) as server:
        result = CliRunner().invoke(
            main,
            ["judge", "pairwise", "--answers", str(base), str(tuned), "--judge-url", server.url, "--judge-model", "scripted"]
            + ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
        )
        assert result.exit_code == 0, result.output
        assert server.calls == 4  # two shared prompts, both orders
    report = json.loads((tmp_path / "out" / "judge.json").read_text(encoding="utf-8"))
    assert report["judged"] == 2 and report["win"] == 2 and report["unmatched"] == {"base_only": ["q3"], "tuned_only": ["q4"]}
    assert "answered on the base side only: q3" in result.output
    broken = write_lines(tmp_path / "broken.jsonl", ['{"prompt_id": "q1", "prompt": [], "response": "x"}'])
    args = ["--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m"]
    failed = CliRunner().invoke(main, ["judge", "pairwise", "--answers", str(base), str(broken), *args])
    assert failed.exit_code == 1 and "broken.jsonl:1: `prompt` must be text or a list of chat messages" in failed.output
