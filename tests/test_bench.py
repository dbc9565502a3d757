"""`caretune bench` on CPU with the tiny Qwen3: the same code a GPU runs, reporting finite figures."""

import json
import math

import pytest
from click.testing import CliRunner

from caretune.cli import main
from caretune.training import bench


def test_sampled_lengths_follow_the_profile():
    quantiles = bench.load_profile("chatmed")
    lengths = sorted(bench.sample_lengths(quantiles, 20_000))
    for q in (10, 50, 90):
        assert abs(lengths[len(lengths) * q // 100] - quantiles[q]) <= 3, q
    assert quantiles[0] <= lengths[0] and lengths[-1] <= quantiles[100]
    assert bench.sample_lengths(quantiles, 50) == bench.sample_lengths(quantiles, 50)  # seeded


def test_profile_errors(tmp_path):
    with pytest.raises(bench.BenchError, match="no length profile 'nope'"):
        bench.load_profile("nope")
    not_a_plan = tmp_path / "plan.json"
    not_a_plan.write_text("{}", encoding="utf-8")
    with pytest.raises(bench.BenchError, match="not a `caretune plan --json` output"):
        bench.load_profile(str(not_a_plan))
    with pytest.raises(bench.BenchError, match="unknown variant"):
        bench.variant_by_name("padding-eager")
    assert len({v.name for v in bench.ALL_VARIANTS}) == 8


def test_unavailable_variants_on_cpu():
    assert bench.unavailable(bench.variant_by_name("padding-sdpa"), cuda=False) is None
    assert "flash attention 2" in bench.unavailable(bench.variant_by_name("neat-packing-fa2"), cuda=False)
    assert "Liger" in bench.unavailable(bench.variant_by_name("padding-sdpa-liger"), cuda=False)


def test_throughput_summary_by_hand():
    from caretune.training.estimate import GPUS, QWEN3_FAMILY

    # 4 steps; the first is warm-up. Steps 2-4: 3 x 1000 real, 3 x 1200 processed tokens in 10.0 - 4.0 = 6 s
    records = [(999, 9999), (1000, 1200), (1000, 1200), (1000, 1200), (5, 5)]  # the last batch was prefetched
    summary = bench.summarise(records, [4.0, 6.0, 8.0, 10.0], 1, QWEN3_FAMILY["Qwen/Qwen3-8B"], GPUS["h100"], 0.0)
    assert summary["timed_steps"] == 3 and summary["seconds"] == 6.0
    assert summary["real_tokens_per_s"] == 500.0 and summary["processed_tokens_per_s"] == 600.0
    assert summary["non_padding_share"] == pytest.approx(1000 / 1200, abs=1e-4)
    assert summary["hfu"] == pytest.approx(500 * 45_410_408_448 / 989.4e12, abs=1e-4)  # 6·N: with the recompute
    assert summary["mfu"] == pytest.approx(500 * 30_273_605_632 / 989.4e12, abs=1e-4)  # 4·N
    assert bench.summarise(records, [4.0, 6.0], 1, QWEN3_FAMILY["Qwen/Qwen3-8B"], None, 0.0)["mfu"] is None


def test_model_is_built_on_the_device_in_the_training_dtype():
    import torch
    from transformers import Qwen3Config

    from caretune.training.tiny_model import TINY_CONFIG

    model = bench.built_on("cpu", torch.bfloat16).from_config(Qwen3Config(**TINY_CONFIG))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    again = bench.built_on("cpu", torch.bfloat16).from_config(Qwen3Config(**TINY_CONFIG))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))  # seeded


@pytest.mark.lf
def test_synthetic_rows_have_the_target_token_lengths(tmp_path):
    """Digits are one Qwen3 token each, so LLaMA-Factory's preprocessing gives back every target length."""
    from caretune.constants import TEMPLATE
    from caretune.prep.lengths import TokenizerSource, turn_lengths
    from caretune.prep.tokenizer import load_qwen3_tokenizer

    tokenizer, _ = load_qwen3_tokenizer(None)
    overhead = bench.template_overhead(tokenizer)
    targets = bench.sample_lengths(bench.load_profile("chatmed"), 40)
    (tmp_path / "bench.json").write_text(json.dumps(bench.synthetic_rows(targets, overhead)), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "bench.json"}}), encoding="utf-8")
    data = turn_lengths(
        "bench", str(tmp_path), TokenizerSource(None), str(tmp_path / "scratch"), template=TEMPLATE, use_cache=False
    )
    assert data.lengths(4096) == targets


@pytest.mark.lf
@pytest.mark.slow
def test_bench_runs_on_cpu_and_reports_finite_figures(tmp_path, monkeypatch):
    out, record = tmp_path / "bench.json", tmp_path / "benchmarks.md"
    record.write_text("# Benchmarks\n", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--variant",
            "padding-sdpa",
            "--variant",
            "neat-packing-sdpa",
            "--variant",
            "neat-packing-fa2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--cutoff-len",
            "2048",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--record",
            str(record),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["model"] == "tiny" and report["device"].startswith("CPU")
    ran = {v["name"]: v for v in report["variants"] if "real_tokens_per_s" in v}
    assert set(ran) == {"padding-sdpa", "neat-packing-sdpa"}
    skipped = [v for v in report["variants"] if "skipped" in v]
    assert [v["name"] for v in skipped] == ["neat-packing-fa2"]
    for v in ran.values():
        assert v["timed_steps"] == 2 and v["finite"] and len(v["losses"]) == 3
        for key in ("real_tokens_per_s", "processed_tokens_per_s", "seconds"):
            assert math.isfinite(v[key]) and v[key] > 0, key
        assert 0 < v["real_tokens"] <= v["processed_tokens"] and v["peak_rss_bytes"] > 0
        assert v["mfu"] is None and v["peak_memory_bytes"] is None  # no GPU peak to divide by
    # a pack holds several rows padded once; padding pads every row of a batch to its longest
    assert ran["neat-packing-sdpa"]["non_padding_share"] > ran["padding-sdpa"]["non_padding_share"]
    table = record.read_text(encoding="utf-8")
    assert table.startswith("# Benchmarks\n\n") and "| padding-sdpa |" in table and "skipped: flash attention 2" in table

    # plan takes the measured rate of the variant that trains as the recipe does
    from caretune.training.plan import make_plan
    from tests.helpers import converted_workspace, tiny_recipe

    workspace = converted_workspace(tmp_path / "project")
    monkeypatch.chdir(workspace)
    recipe = tiny_recipe(workspace, "lora_sft", neat_packing=True)
    plan = make_plan(str(recipe), gpus=1, gpu_name="h100", bench=str(out))
    assert plan.throughput.processed_tokens_per_s_per_gpu == ran["neat-packing-sdpa"]["processed_tokens_per_s"]
    assert "variant neat-packing-sdpa on CPU" in plan.throughput.source


@pytest.mark.lf
@pytest.mark.slow
def test_time_budget_stops_a_variant_with_the_steps_done(tmp_path):
    budget = 4.0
    seen = []
    report = bench.run_bench(
        model=None,
        variants=["padding-sdpa"],
        steps=500,
        warmup=1,
        micro_batch=None,
        pack_batch=1,
        cutoff_len=None,
        profile="chatmed",
        work_dir=tmp_path,
        time_budget=budget,
        log=lambda _: None,
        on_update=lambda r: seen.append(len(r["variants"])),
    )
    [variant] = report["variants"]
    assert report["time_budget_s"] == budget and seen == [1]  # the report is handed over after the variant
    assert 1 <= variant["timed_steps"] < 500 and variant["finite"]
    assert variant["seconds"] < budget + 5  # the loop ended at the first step end past the budget
