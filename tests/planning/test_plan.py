"""`caretune plan` on the shipped sample agrees with LLaMA-Factory's own preprocessing, packed and unpacked."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from caretune import lf
from caretune.cli import main
from caretune.planning.figures import duration_text
from caretune.planning.plan import make_plan
from caretune.planning.recipe_settings import PlanError, read_recipe
from tests.helpers import ROOT, caretune_env, convert_into, converted_workspace, tiny_recipe

pytestmark = pytest.mark.lf


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return converted_workspace(tmp_path_factory.mktemp("plan"))


def lf_train_dataset(recipe):
    """The training set exactly as `llamafactory-cli train RECIPE` builds it."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    model_args, data_args, training_args, _, _ = get_train_args({**args, "output_dir": str(recipe.parent / "out")})
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    return get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)["train_dataset"]


@pytest.mark.parametrize("packing", [False, True], ids=["padding", "neat-packing"])
@pytest.mark.slow
def test_plan_agrees_with_llamafactory_preprocessing(workspace, monkeypatch, packing):
    monkeypatch.chdir(workspace)
    changes = {
        "cutoff_len": 1024,
        "per_device_train_batch_size": 1,
        "preprocessing_batch_size": 16,
        "num_train_epochs": 1.0,
        "max_steps": -1,
    }
    if packing:
        changes["neat_packing"] = True
    recipe = tiny_recipe(workspace, "lora_sft", workspace / f"plan-{packing}.yaml", **changes)
    plan = make_plan(str(recipe), gpus=1, gpu_name="h100")
    dataset = lf_train_dataset(recipe)
    real = sum(sum(1 for m in mask if m != 0) for mask in dataset["attention_mask"])
    assert plan.micro_batches_per_gpu_epoch == len(dataset)  # rows, or packs, one per micro-batch
    assert plan.real_tokens_per_epoch == real
    assert plan.optimizer_steps == len(dataset)
    if packing:
        assert len(dataset) < plan.rows  # several rows per pack
        assert {len(ids) for ids in dataset["input_ids"]} == {1024}
        assert plan.processed_tokens_per_epoch == 1024 * len(dataset)  # sdpa: every pack padded to the cutoff
    else:
        assert plan.rows == len(dataset)
        assert plan.processed_tokens_per_epoch == sum(-(-len(ids) // 8) * 8 for ids in dataset["input_ids"])


WALKTHROUGH = "recipes/qwen3-8b/lora_sft_walkthrough.yaml"
FAST = "recipes/qwen3-8b/lora_sft.yaml"


def test_plan_of_the_walkthrough_recipe_json(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    result = CliRunner().invoke(main, ["plan", WALKTHROUGH, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["gpus"] == 4 and plan["gpu"] == "h800" and plan["params"] == 8_190_735_360
    assert plan["arch_source"] == "caretune's Qwen3 family table"  # offline
    report = {d["name"]: d for d in plan["datasets"]}
    assert set(report) == {"multi-med", "huatuo2-sft"}
    for name in report:
        written = json.loads((workspace / "data" / f"{name}.report.json").read_text(encoding="utf-8"))["training"]["rows"]
        assert report[name]["rows"] == report[name]["rows_kept"] == written  # one row per trained answer
    assert 0.3 < plan["non_padding_share"] < 1.0
    assert plan["processed_tokens_per_epoch"] > plan["real_tokens_per_epoch"]
    q = plan["length_quantiles"]
    assert len(q) == 101 and q == sorted(q) and q[100] <= 2048
    memory = plan["memory_bytes"]
    assert memory["weights"] == 2 * plan["params"] and plan["fits"] is (memory["total"] <= plan["memory_limit_bytes"])
    t = plan["throughput"]
    assert "assumed 40% HFU" in t["source"] and t["mfu"] < t["hfu"]  # the recompute counts in HFU only
    assert duration_text(59) == "0m59s" and duration_text(7560) == "2h06m"
    assert t["real_tokens_per_s_per_gpu"] == pytest.approx(
        t["processed_tokens_per_s_per_gpu"] * plan["non_padding_share"], rel=1e-3
    )
    assert plan["gpu_hours"] == pytest.approx(plan["wall_seconds"] * 4 / 3600, abs=0.01)


def test_fast_recipe_against_the_walkthrough(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    walkthrough = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800")
    fast = make_plan(FAST, gpus=4, gpu_name="h800")
    assert fast.packing == "neat" and fast.attention == "sdpa"
    fa2 = make_plan(FAST, gpus=4, gpu_name="h800", attention="fa2")
    assert fa2.non_padding_share == 1.0  # fa2 neat packing: LLaMA-Factory strips the padding of each pack
    assert fast.non_padding_share < 1.0
    # 113 sample rows over 16 preprocessing workers: ~7 rows a shard, each shard packed alone
    assert fast.pack_fill < 0.9 and any("lower preprocessing_num_workers" in w for w in fast.warnings)
    one_worker = FAST.replace(".yaml", "-1worker.yaml")
    Path(one_worker).write_text(
        Path(FAST).read_text(encoding="utf-8").replace("preprocessing_num_workers: 16\n", ""), encoding="utf-8"
    )
    sdpa = make_plan(one_worker, gpus=4, gpu_name="h800", attention="sdpa")
    assert sdpa.pack_fill > fast.pack_fill and sdpa.non_padding_share > walkthrough.non_padding_share
    assert fast.real_tokens_per_epoch == pytest.approx(walkthrough.real_tokens_per_epoch, rel=0.01)
    assert fast.memory_bytes["logits"] < walkthrough.memory_bytes["logits"] / 10  # fused cross-entropy
    # time at equal tokens/s: full packs beat padding; 16 part-empty packs of this small sample do not
    assert sdpa.processed_tokens_per_epoch < walkthrough.processed_tokens_per_epoch
    assert fa2.processed_tokens_per_epoch == fa2.real_tokens_per_epoch
    assert not any("per_device_train_batch_size" in w for w in fast.warnings)


def test_plan_extrapolates_rows_and_reads_bench_figures(workspace, monkeypatch, tmp_path):
    monkeypatch.chdir(workspace)
    base = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800")
    scaled = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800", rows_override={"multi-med": base.datasets[0].rows * 100})
    assert scaled.datasets[0].rows == base.datasets[0].rows * 100
    assert scaled.real_tokens_per_epoch > 30 * base.real_tokens_per_epoch
    sampled = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800", sample=20)
    assert [d.tokenized for d in sampled.datasets] == [20, 20]
    assert [d.rows for d in sampled.datasets] == [d.rows for d in base.datasets]  # every row still counted
    assert sampled.real_tokens_per_epoch == pytest.approx(base.real_tokens_per_epoch, rel=0.25)
    assert any("sampled 40 of" in w for w in sampled.warnings)
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "device": "test",
                "model": "Qwen/Qwen3-8B",
                "params": 8_190_735_360,
                "variants": [
                    {"name": "padding", "packing": False, "liger": False, "processed_tokens_per_s": 5000.0},
                    {"name": "neat-packing", "packing": True, "liger": False, "processed_tokens_per_s": 9000.0},
                ],
            }
        ),
        encoding="utf-8",
    )
    measured = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800", bench=str(bench))
    assert measured.throughput.processed_tokens_per_s_per_gpu == 5000.0
    assert "variant padding on test" in measured.throughput.source
    assert measured.wall_seconds == pytest.approx(base.processed_tokens_per_epoch * 2 / (5000 * 4), abs=1)
    tiny = tmp_path / "tiny-bench.json"
    tiny.write_text(json.dumps({"device": "CPU", "model": "tiny", "params": 19_500_000, "variants": []}), encoding="utf-8")
    with pytest.raises(PlanError, match="the bench ran tiny"):
        make_plan(WALKTHROUGH, gpus=4, gpu_name="h800", bench=str(tiny))


def test_plan_takes_the_bench_variant_that_trains_as_the_recipe_does(workspace, monkeypatch, tmp_path):
    """A faster variant without checkpointing, compiled, or on FlashAttention-2 is not the rate of an sdpa recipe
    with checkpointing; a recipe edited to drop checkpointing takes the -no-gc figure."""
    from dataclasses import replace

    from caretune.planning.plan import load_bench, resolve_arch

    monkeypatch.chdir(workspace)
    settings = read_recipe(FAST)
    arch = resolve_arch(settings.model)[0]

    def measured(name, rate, **changes):
        fields = {"packing": True, "liger": True, "attention": "sdpa", "activations": "checkpointed", "compiled": False}
        return {"name": name, **fields, **changes, "processed_tokens_per_s": rate}

    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "device": "test",
                "params": arch.params(),
                "variants": [
                    measured("neat-packing-sdpa-liger", 7000.0),
                    measured("neat-packing-sdpa-liger-no-gc", 9000.0, activations="kept"),
                    measured("neat-packing-sdpa-liger-compile", 9500.0, compiled=True),
                    measured("neat-packing-fa2-liger-long-pack", 9900.0, attention="fa2", long_pack=True),
                ],
            }
        ),
        encoding="utf-8",
    )
    assert load_bench(str(bench), settings, arch)["name"] == "neat-packing-sdpa-liger"
    no_gc = replace(settings, gradient_checkpointing=False)
    assert load_bench(str(bench), no_gc, arch)["name"] == "neat-packing-sdpa-liger-no-gc"
    with pytest.raises(PlanError, match="no measured variant with packing=True, liger=True, activations=offloaded"):
        load_bench(str(bench), replace(settings, unsloth_gc=True), arch)


def test_an_extrapolated_plan_packs_as_many_rows_as_it_plans_for(workspace, monkeypatch):
    """With --rows past the rows tokenized, the lengths are resampled to the planned count (at most
    PLANNED_LENGTHS_CAP a dataset) before packing: a few converted rows no longer pack into half-empty packs."""
    from caretune.planning.replay import PLANNED_LENGTHS_CAP

    monkeypatch.chdir(workspace)
    shard = make_plan(FAST, gpus=4, gpu_name="h800")
    full = make_plan(FAST, gpus=4, gpu_name="h800", rows_override={"multi-med": 500_000, "huatuo2-sft": 142_248})
    assert shard.pack_fill < 0.7  # 116 rows in 16 preprocessing shards
    assert full.pack_fill > 0.95
    drawn = [d.lengths for d in full.datasets]  # at one rate, so each set weighs by its rows
    assert sum(drawn) == pytest.approx(2 * PLANNED_LENGTHS_CAP, abs=2) and drawn[0] / drawn[1] == pytest.approx(
        full.datasets[0].rows_kept / full.datasets[1].rows_kept, rel=1e-3
    )
    assert all(d.lengths_from.startswith(f"resampled from {d.tokenized} tokenized rows") for d in full.datasets)
    assert [d.lengths_from for d in shard.datasets] == ["tokenized", "tokenized"]
    # the real tokens per row are the shard's: only the packing changed
    per_row_shard = shard.real_tokens_per_epoch / shard.rows
    assert full.real_tokens_per_epoch / full.rows == pytest.approx(per_row_shard, rel=0.05)
    assert full.wall_seconds < 0.75 * full.rows / shard.rows * shard.wall_seconds


def test_a_length_profile_stands_in_for_a_datasets_rows(workspace, monkeypatch, tmp_path):
    from caretune.prep.profiles import load_profile

    monkeypatch.chdir(workspace)
    profiled = make_plan(
        FAST, gpus=4, gpu_name="h800", rows_override={"multi-med": 500_000}, length_profiles={"multi-med": "chatmed"}
    )
    multi_med = profiled.datasets[0]
    assert multi_med.rows == multi_med.rows_kept == 500_000 and multi_med.lengths_from == "profile chatmed"
    chatmed = load_profile("chatmed")
    assert profiled.length_quantiles[50] == pytest.approx(chatmed[50], rel=0.35)  # mixed with huatuo2-sft's rows
    with pytest.raises(PlanError, match="--lengths names nope, not a dataset of"):
        make_plan(FAST, gpus=4, gpu_name="h800", length_profiles={"nope": "chatmed"})
    with pytest.raises(PlanError, match="no length profile 'elsewhere'"):
        make_plan(FAST, gpus=4, gpu_name="h800", length_profiles={"multi-med": "elsewhere"})
    done = CliRunner().invoke(main, ["plan", FAST, "--rows", "multi-med=500000", "--lengths", "multi-med=chatmed", "--no-cache"])
    assert done.exit_code == 0, done.output
    assert "lengths: profile chatmed" in done.output


def test_plan_errors_name_the_file(workspace, monkeypatch, tmp_path):
    monkeypatch.chdir(workspace)
    bad = tmp_path / "full.yaml"
    bad.write_text("stage: sft\nfinetuning_type: full\ndataset: multi-med\n", encoding="utf-8")
    with pytest.raises(PlanError, match="full.yaml: plan estimates LoRA SFT"):
        read_recipe(str(bad))
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("dataset: multi-med\ndataset_dir: nowhere\n", encoding="utf-8")
    with pytest.raises(PlanError, match="has no dataset_info.json"):
        read_recipe(str(elsewhere))
    result = CliRunner().invoke(main, ["plan", FAST, "--rows", "multi-med=lots"])
    assert result.exit_code == 2 and "DATASET=ROWS" in result.output
    result = CliRunner().invoke(main, ["plan", FAST, "--rows", "nope=10"])
    assert result.exit_code == 1 and "not a dataset of" in result.output


@pytest.mark.slow
def test_real_shards_fast_recipe_is_over_95_percent_real_tokens(tmp_path, monkeypatch):
    """The real ChatMed shard and the ShareGPT rows (standing in for HuatuoGPT2), as the recipes train them."""
    import shutil

    from converters import chatmed, huatuo
    from tests.helpers import ROOT, shared_file

    raws = ((chatmed, shared_file("chatmed/corpus_92_hpc.jsonl")), (huatuo, shared_file("sharegpt/medical_sft_1K_format.jsonl")))
    written = 0
    for source, raw in raws:
        report, _ = convert_into(tmp_path, source, raw, eval_size=500)
        written += report["written"]
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    walkthrough = make_plan(WALKTHROUGH, gpus=4, gpu_name="h800")
    sdpa = make_plan(FAST, gpus=4, gpu_name="h800", attention="sdpa")
    # the training rows the filters keep (4,196 + 510 before the filters were measured on labelled rows)
    assert walkthrough.rows == sdpa.rows == written == 4177 + 534
    assert walkthrough.non_padding_share < 0.6  # batch 24 padded to its longest row
    assert sdpa.pack_fill >= 0.95 and sdpa.non_padding_share >= 0.95  # every pack padded to 2048 under sdpa
    assert not walkthrough.fits and sdpa.fits  # a 2048-token row in a batch of 24, unfused logits


@pytest.mark.parametrize("name", ["lora_sft", "lora_sft_walkthrough"])
def test_plan_json_is_the_stored_copy(workspace, monkeypatch, name):
    """`caretune plan --json` of both Qwen3-8B recipes on the shipped sample, byte for byte as stored in
    tests/data (written before the plan became a dataclass; since 2026-12-01 the throughput holds MFU and HFU
    apart, the old `mfu` being the HFU; since 2026-12-02 each dataset says where its lengths come from, and the
    unfused logits take 12 bytes; since 2026-12-03 prompts end in the empty think block, and each dataset counts
    its rows under a mix and its tokens; since 2026-12-07 a multi-turn conversation is one row per trained answer: 56
    HuatuoGPT2 rows became 65, 9,449 tokens an epoch 10,747)."""
    monkeypatch.chdir(workspace)
    plan = make_plan(f"recipes/qwen3-8b/{name}.yaml", gpus=4, gpu_name="h800")
    stored = (ROOT / "tests" / "data" / f"plan_qwen3-8b_{name}.json").read_text(encoding="utf-8")
    assert json.dumps(plan.to_json(), ensure_ascii=False, indent=2) + "\n" == stored


def test_a_default_of_llamafactory_changes_the_plan(workspace, monkeypatch):
    """A key a recipe leaves out takes LLaMA-Factory's own default, read from its dataclasses: a changed default
    (here preprocessing_batch_size, which bounds each greedy knapsack) changes the plan, with no copy to drift."""
    from llamafactory.hparams import DataArguments

    monkeypatch.chdir(workspace)
    recipe = "recipes/qwen3-8b/lora_sft.yaml"
    before = make_plan(recipe, gpus=4, gpu_name="h800")
    monkeypatch.setattr(DataArguments.__dataclass_fields__["preprocessing_batch_size"], "default", 2)
    assert read_recipe(recipe).preprocessing_batch_size == 2
    after = make_plan(recipe, gpus=4, gpu_name="h800")
    assert after.pack_fill < before.pack_fill and after.optimizer_steps >= before.optimizer_steps


@pytest.mark.slow
def test_plan_prints_no_logging_error_and_no_nothink_advice(workspace):
    """LLaMA-Factory's log handler was first set up while plan redirected stdout to a file it then closed, so its
    next warning (the reasoning template's `_nothink` advice) raised "--- Logging error ---" with a traceback; set up
    on the real stdout, it must still log warnings only (its info lines once broke --json)."""
    import subprocess
    import sys

    env = caretune_env()
    env.pop("LLAMAFACTORY_VERBOSITY")  # as a user runs it: LLaMA-Factory's info lines must not reach --json's stdout
    command = [sys.executable, "-m", "caretune.cli", "plan", "recipes/qwen3-8b/lora_sft.yaml", "--json", "--no-cache"]
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Logging error" not in done.stderr and "_nothink" not in done.stderr, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"] > 0


@pytest.mark.lf
def test_the_mix_is_llamafactorys_own_seeded_draw():
    """Rows an epoch takes of each set are LLaMA-Factory's merge_dataset draw with the recipe's seed, which depends on
    the sets' sizes alone (the same draw over sets with real content). The expected counts plan printed before
    (T = max(rows / p), p x T of each) differ from the draw: 900 / 100 / 250 expected, 900 / 110 / 251 drawn."""
    from datasets import Dataset
    from llamafactory.data.data_utils import merge_dataset
    from llamafactory.hparams import DataArguments

    from caretune import lf

    rows, probs = [900, 100, 50], [0.72, 0.08, 0.2]
    for strategy in ("interleave_under", "interleave_over"):
        parts = [Dataset.from_dict({"text": [f"{index}:{row}" for row in range(count)]}) for index, count in enumerate(rows)]
        args = DataArguments(mix_strategy=strategy, interleave_probs=",".join(map(str, probs)))
        merged = merge_dataset(parts, args, seed=42)["text"]
        real = [sum(1 for text in merged if text.startswith(f"{index}:")) for index in range(len(rows))]
        assert lf.interleaved_rows(rows, strategy, probs, seed=42) == real
    assert lf.interleaved_rows(rows, "interleave_over", probs, seed=42) == [900, 110, 251]
    assert lf.interleaved_rows(rows, "interleave_over", probs, seed=7) != [900, 110, 251]  # the seed matters


def _mixed_project(tmp_path):
    from converters import general
    from tests.helpers import SAMPLE

    project = converted_workspace(tmp_path)
    convert_into(project, general, SAMPLE / "general_zh_sample.jsonl", eval_size=2)
    return project


def test_general_share_writes_interleave_probs_and_plan_counts_each_set(tmp_path, monkeypatch):
    from caretune.recipe_folders.generator import RecipeError

    project = _mixed_project(tmp_path)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--gpus", "4", "--general-share", "0.1", "--out", "recipes/mix"]
    )
    assert result.exit_code == 0, result.output
    recipe = yaml.safe_load((project / "recipes/mix/lora_sft.yaml").read_text(encoding="utf-8"))
    probs = [float(p) for p in str(recipe["interleave_probs"]).split(",")]
    assert recipe["dataset"] == "multi-med,huatuo2-sft,general-zh" and recipe["mix_strategy"] == "interleave_over"
    written = [  # training rows: the unit interleave_probs weigh
        json.loads((project / f"data/{n}.report.json").read_text(encoding="utf-8"))["training"]["rows"]
        for n in ("multi-med", "huatuo2-sft")
    ]
    assert probs[2] == 0.1 and probs[0] / probs[1] == pytest.approx(written[0] / written[1], rel=1e-3)
    plan = make_plan("recipes/mix/lora_sft.yaml", gpus=4, gpu_name="h800")
    mixed = {d.name: d.mixed_rows for d in plan.datasets}
    rows = [d.rows for d in plan.datasets]  # 18 general rows at 10%: the draw goes on until they are all used once
    assert list(mixed.values()) == lf.interleaved_rows(rows, "interleave_over", probs, seed=42)  # LLaMA-Factory's draw
    assert mixed["general-zh"] >= 18 and sum(mixed.values()) != round(18 / 0.1)  # not the expected count of before
    assert plan.rows == sum(mixed.values())
    tokens = {d.name: d.tokens_per_epoch for d in plan.datasets}  # each set's share of the epoch's tokens
    assert sum(tokens.values()) == pytest.approx(plan.real_tokens_per_epoch, rel=0.01) and tokens["general-zh"] > 0
    with pytest.raises(RecipeError, match="more than 0 and at most 0.5"):
        from caretune.recipe_folders.generator import QWEN3_8B, mixed_in

        mixed_in(QWEN3_8B, 0.7, "dataset_info.json")


@pytest.mark.slow
def test_llamafactory_mixes_the_general_set_at_about_the_share(tmp_path, monkeypatch):
    """LLaMA-Factory's own interleave_over on the recipe `recipes new --general-share 0.3` writes: the share of general
    rows in the training set it builds is near 30% (its draws are random: a wide band on these small samples)."""
    project = _mixed_project(tmp_path)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(
        main, ["recipes", "new", "--model", "Qwen/Qwen3-8B", "--gpus", "4", "--general-share", "0.3", "--out", "recipes/mix"]
    )
    assert result.exit_code == 0, result.output
    recipe = tiny_recipe(project, "lora_sft", project / "mix.yaml")
    args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    mix = yaml.safe_load((project / "recipes/mix/lora_sft.yaml").read_text(encoding="utf-8"))
    args.update({k: mix[k] for k in ("dataset", "mix_strategy", "interleave_probs")}, neat_packing=False, packing=False)
    recipe.write_text(yaml.safe_dump(args, allow_unicode=True), encoding="utf-8")
    dataset = lf_train_dataset(recipe)
    general_rows = json.loads((project / "data/general-zh.json").read_text(encoding="utf-8"))
    general_prompts = {row["conversations"][0]["value"] for row in general_rows}
    from caretune.prep.tokenizer import offline_tokenizer

    tokenizer = offline_tokenizer()
    texts = [tokenizer.decode(ids) for ids in dataset["input_ids"]]
    share = sum(any(prompt in text for prompt in general_prompts) for text in texts) / len(texts)
    assert 0.15 < share < 0.45, share


def test_each_dataset_weighs_by_its_rows_whatever_its_extrapolation():
    """A 2,000-row shard planned for 500,000 rows beside 140,000 rows tokenized whole: before, one overall scale gave
    the shard 80M tokens and the other 224M; each set's true share is rows x mean length (150M and 84M)."""
    from caretune.planning.replay import DatasetRows, epoch

    shard = DatasetRows("a", 500_000, 2_000, 500_000, 0, "tokenized")
    whole = DatasetRows("b", 140_000, 140_000, 140_000, 0, "tokenized")
    planned = epoch([shard, whole], [[300] * 2_000, [600] * 140_000], [500_000, 140_000], __import__("random").Random(0))
    assert [d.tokens_per_epoch for d in planned.datasets] == [150_000_000, 84_000_000]
    assert round(sum(planned.lengths) * planned.scale) == 234_000_000
    assert planned.datasets[0].lengths_from == "resampled from 2000 tokenized rows (2000 kept)"
