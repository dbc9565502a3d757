"""`caretune bench` on CPU with the tiny Qwen3: the same code a GPU runs, reporting finite figures."""

import json
import math

import pytest
from click.testing import CliRunner

from caretune.cli import main
from caretune.planning import bench, bench_report, bench_variants, bench_worker
from caretune.planning.bench_settings import BenchSettings
from caretune.prep import profiles


def test_sampled_lengths_follow_the_profile():
    quantiles = profiles.load_profile("chatmed")
    lengths = sorted(profiles.sample_lengths(quantiles, 20_000, bench_worker.SEED))
    for q in (10, 50, 90):
        assert abs(lengths[len(lengths) * q // 100] - quantiles[q]) <= 3, q
    assert quantiles[0] <= lengths[0] and lengths[-1] <= quantiles[100]
    assert profiles.sample_lengths(quantiles, 50, 7) == profiles.sample_lengths(quantiles, 50, 7)  # seeded


def test_profile_errors(tmp_path):
    with pytest.raises(profiles.ProfileError, match="no length profile 'nope'"):
        profiles.load_profile("nope")
    not_a_plan = tmp_path / "plan.json"
    not_a_plan.write_text("{}", encoding="utf-8")
    with pytest.raises(profiles.ProfileError, match="not a `caretune plan --json` output"):
        profiles.load_profile(str(not_a_plan))
    with pytest.raises(bench.UserError, match="unknown variant"):
        bench_variants.variant_by_name("padding-eager")
    assert len({v.name for v in bench_variants.ALL_VARIANTS}) == 8


def test_speed_variants_are_named_by_suffixes_and_train_as_named(tmp_path):
    speed = ("neat-packing-sdpa-liger-no-gc", "neat-packing-sdpa-liger-unsloth-gc", "neat-packing-fa2-liger-long-pack")
    for name in (*speed, "padding-sdpa-unsloth-gc-compile", "neat-packing-sdpa-no-gc-long-pack"):
        assert bench_variants.variant_by_name(name).name == name
    with pytest.raises(bench.UserError, match="one long pack needs neat packing"):
        bench_variants.variant_by_name("padding-sdpa-long-pack")
    with pytest.raises(bench.UserError, match="unknown variant 'neat-packing-sdpa-compile-no-gc'"):
        bench_variants.variant_by_name("neat-packing-sdpa-compile-no-gc")  # suffixes in their order only
    common = dict(
        model_dir=tmp_path, dataset_dir=tmp_path, output_dir=tmp_path, cutoff_len=2048, micro_batch=24, steps=5, bf16=True
    )
    base = bench.train_args(bench_variants.variant_by_name("neat-packing-sdpa-liger"), pack_batch=4, **common)
    assert base["gradient_checkpointing"] and "disable_gradient_checkpointing" not in base and "torch_compile" not in base
    no_gc = bench.train_args(bench_variants.variant_by_name("neat-packing-sdpa-liger-no-gc-compile"), pack_batch=6, **common)
    assert no_gc["disable_gradient_checkpointing"] and not no_gc["gradient_checkpointing"] and no_gc["torch_compile"]
    assert no_gc["per_device_train_batch_size"] == 6 and no_gc["enable_liger_kernel"] and no_gc["neat_packing"]
    unsloth = bench.train_args(bench_variants.variant_by_name("neat-packing-sdpa-unsloth-gc"), pack_batch=4, **common)
    assert unsloth["use_unsloth_gc"] and unsloth["gradient_checkpointing"]


def test_variants_take_their_own_time_budgets_and_compile_best_runs_last():
    assert bench_variants.requested_variants(["compile-best=90", "neat-packing-sdpa=45", "padding-sdpa"]) == [
        ("neat-packing-sdpa", 45.0),
        ("padding-sdpa", None),
        ("compile-best", 90.0),
    ]
    assert len(bench_variants.requested_variants(None)) == 8
    for bad in ("neat-packing-sdpa=soon", "neat-packing-sdpa=0", "neat-packing-sdpa=-3"):
        with pytest.raises(bench.UserError, match="must be a positive number of seconds"):
            bench_variants.requested_variants([bad])
    with pytest.raises(bench.UserError, match="unknown variant"):
        bench_variants.requested_variants(["padding-eager=30"])


def test_each_variant_sizes_its_step():
    from caretune.planning import estimate
    from caretune.planning.plan import FA2_LONG_PACK

    arch = estimate.QWEN3_FAMILY["Qwen/Qwen3-8B"]
    h200 = int(141 * estimate.GIB * estimate.MEMORY_HEADROOM)

    def shape(name, limit=h200):
        return bench.step_shape(bench_variants.variant_by_name(name), arch, 24, 4, 2048, limit)

    assert shape("padding-sdpa")[:2] == (24, 2048) and shape("neat-packing-sdpa-liger")[:2] == (4, 2048)
    assert shape("neat-packing-fa2-liger-long-pack")[:2] == (1, FA2_LONG_PACK)
    assert shape("neat-packing-sdpa-liger-unsloth-gc")[:2] == (4, 2048)  # compared at the baseline's packs
    packs, cutoff, why = shape("neat-packing-sdpa-liger-no-gc")
    kept = dict(gpus=1, lora_rank=8, zero_stage=0, offload=False, fused_cross_entropy=True, activations="kept")
    fits = estimate.memory_breakdown(arch, micro_batch_tokens=packs * 2048, **kept)["total"]
    one_more = estimate.memory_breakdown(arch, micro_batch_tokens=(packs + 1) * 2048, **kept)["total"]
    assert packs >= 1 and fits <= h200 < one_more and "the most packs the memory model fits in 126.9 GiB" in why
    assert shape("neat-packing-sdpa-liger-no-gc", limit=None)[:2] == (4, 2048)  # CPU: no GPU memory to size by
    no_gc = bench.modelled_peak(bench_variants.variant_by_name("neat-packing-sdpa-liger-no-gc"), arch, packs, 2048)
    assert no_gc == fits - estimate.FIXED_OVERHEAD  # what max_memory_allocated can see: no CUDA context
    checkpointed = bench.modelled_peak(bench_variants.variant_by_name("neat-packing-sdpa-liger"), arch, packs, 2048)
    assert checkpointed < no_gc / 2
    assert shape("neat-packing-sdpa-liger-no-gc", limit=10 * estimate.GIB)[0] == 0  # not one pack: skipped


def test_losses_are_compared_with_the_baseline_within_noise():
    def ran(name, losses, rate):
        return {"name": name, "losses": losses, "real_tokens_per_s": rate, "finite": True}

    report = {
        "warmup": 1,
        "variants": [
            ran("base", [12.0, 10.0, 10.2, 9.8, 10.0], 100.0),  # timed mean 10.0
            ran("close", [11.0, 10.1, 10.1, 10.1, 10.1], 300.0),  # +0.1: inside 2% of 10
            ran("off", [11.0, 11.0, 11.0, 11.0, 11.0], 500.0),  # +1.0: outside
            {"name": "skipped", "skipped": "needs CUDA"},
        ],
    }
    bench_report.compare_losses(report)
    base, close, off, _ = report["variants"]
    # baseline: timed losses 10.0, 10.2, 9.8, 10.0; sample variance 0.08/3, of the mean 0.08/12
    assert base["loss_check"]["matches"] and base["loss_check"]["difference"] == 0.0
    assert close["loss_check"]["tolerance"] == pytest.approx(3 * math.sqrt(0.08 / 12), abs=1e-4)  # > 2% of 10
    assert close["loss_check"]["matches"] and close["loss_check"]["difference"] == pytest.approx(0.1)
    assert not off["loss_check"]["matches"]
    assert report["baseline"] == "base" and report["fastest_matching"] == "close"
    table = bench_report.format_report(
        {
            **report,
            "date": "d",
            "device": "CPU",
            "model": "tiny",
            "params": 1e7,
            "cutoff_len": 512,
            "micro_batch": 4,
            "pack_batch": 2,
            "steps": 4,
            "profile": "chatmed",
        }
        | {"variants": []}
    )
    assert "fastest whose mean loss matches it: close" in table


def test_unavailable_variants_on_cpu():
    assert bench_variants.unavailable(bench_variants.variant_by_name("padding-sdpa"), cuda=False) is None
    assert "flash attention 2" in bench_variants.unavailable(bench_variants.variant_by_name("neat-packing-fa2"), cuda=False)
    assert "CUDA" in bench_variants.unavailable(bench_variants.variant_by_name("neat-packing-sdpa-unsloth-gc"), cuda=False)
    assert "Liger" in bench_variants.unavailable(bench_variants.variant_by_name("padding-sdpa-liger"), cuda=False)


def test_throughput_summary_by_hand():
    from caretune.planning.estimate import GPUS, QWEN3_FAMILY

    # 4 steps; the first is warm-up. Steps 2-4: 3 x 1000 real, 3 x 1200 processed tokens in 10.0 - 4.0 = 6 s
    records = [(999, 9999), (1000, 1200), (1000, 1200), (1000, 1200), (5, 5)]  # the last batch was prefetched
    summary = bench_worker.summarise(records, [4.0, 6.0, 8.0, 10.0], 1, QWEN3_FAMILY["Qwen/Qwen3-8B"], GPUS["h100"], 0.0)
    assert summary["timed_steps"] == 3 and summary["seconds"] == 6.0
    assert summary["real_tokens_per_s"] == 500.0 and summary["processed_tokens_per_s"] == 600.0
    assert summary["non_padding_share"] == pytest.approx(1000 / 1200, abs=1e-4)
    assert summary["hfu"] == pytest.approx(500 * 45_410_408_448 / 989.4e12, abs=1e-4)  # 6·N: with the recompute
    assert summary["mfu"] == pytest.approx(500 * 30_273_605_632 / 989.4e12, abs=1e-4)  # 4·N
    assert bench_worker.summarise(records, [4.0, 6.0], 1, QWEN3_FAMILY["Qwen/Qwen3-8B"], None, 0.0)["mfu"] is None


def test_a_time_budget_never_stops_a_variant_before_its_first_timed_step():
    # a slow machine spent a 4 s budget on the warm-up step; the variant then reported an error and no figures
    assert not bench_worker.budget_spent(elapsed_s=9.0, budget_s=4.0, steps_done=1, warmup=1)
    assert bench_worker.budget_spent(elapsed_s=9.0, budget_s=4.0, steps_done=2, warmup=1)
    assert not bench_worker.budget_spent(elapsed_s=3.0, budget_s=4.0, steps_done=5, warmup=1)
    assert not bench_worker.budget_spent(elapsed_s=1e6, budget_s=None, steps_done=5, warmup=1)


def test_model_is_built_on_the_device_in_the_training_dtype():
    import torch
    from transformers import Qwen3Config

    from caretune.training.tiny_model import TINY_CONFIG

    model = bench_worker.built_on("cpu", torch.bfloat16).from_config(Qwen3Config(**TINY_CONFIG))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    again = bench_worker.built_on("cpu", torch.bfloat16).from_config(Qwen3Config(**TINY_CONFIG))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))  # seeded


@pytest.mark.lf
def test_synthetic_rows_have_the_target_token_lengths(tmp_path):
    """Digits are one Qwen3 token each, so LLaMA-Factory's preprocessing gives back every target length."""
    from caretune.constants import TEMPLATE
    from caretune.prep.lengths import LengthRequest, TokenizerSource, turn_lengths
    from caretune.prep.tokenizer import load_qwen3_tokenizer

    tokenizer, _ = load_qwen3_tokenizer(None)
    overhead = bench.template_overhead(tokenizer)
    targets = profiles.sample_lengths(profiles.load_profile("chatmed"), 40, bench_worker.SEED)
    (tmp_path / "bench.json").write_text(json.dumps(bench.synthetic_rows(targets, overhead)), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "bench.json"}}), encoding="utf-8")
    request = LengthRequest(TEMPLATE, use_cache=False)
    data = turn_lengths("bench", str(tmp_path), TokenizerSource(None), str(tmp_path / "scratch"), request)
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
    from caretune.planning.plan import make_plan
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
    settings = BenchSettings(variants=("padding-sdpa",), steps=500, warmup=1, profile="chatmed", time_budget=budget)
    report = bench.run_bench(settings, tmp_path, log=lambda _: None, on_update=lambda r: seen.append(len(r["variants"])))
    [variant] = report["variants"]
    assert report["time_budget_s"] == budget and seen == [1]  # the report is handed over after the variant
    assert 1 <= variant["timed_steps"] < 500 and variant["finite"]
    # the loop ended at the first step end past the budget: within a few steps of it (a step takes seconds when the
    # machine is busy; 11.8 s against a flat 9 s bound failed under a full test run)
    mean_step = variant["seconds"] / variant["timed_steps"]
    assert variant["seconds"] < budget + max(5.0, 3 * mean_step)
