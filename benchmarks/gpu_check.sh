#!/usr/bin/env bash
# The GPU check for an offline CUDA machine with its own PyTorch, in under 10 minutes on one GPU:
#
#   make gpu-kit                            # here, with internet: .gpu-kit/ (the wheels the target lacks)
#   bash benchmarks/gpu_check.sh OUT_DIR    # there, from the repository root (with .gpu-kit/ copied along)
#
# 1. installs the kit with `pip install --no-index --no-deps --target` into a private folder (the machine's
#    own torch is never touched) and checks the machine's numpy/pandas/pyarrow/scipy/matplotlib against it;
# 2. prints the GPU, torch, CUDA and package versions (OUT_DIR/versions.txt);
# 3. `caretune bench` on Qwen3-8B's shape (random weights), each variant with its own time budget (seconds of
#    training; STEPS timed steps after WARMUP at most):
#    - neat-packing-sdpa-liger at the default recipe's packs per device: the baseline (BASELINE_S);
#    - -no-gc: no gradient checkpointing, at the most packs the memory model fits on this GPU (NO_GC_S);
#    - -unsloth-gc: use_unsloth_gc (UNSLOTH_S);
#    - neat-packing-fa2-liger-long-pack: one 8192-token pack (LONG_PACK_S; skipped, with the kit's reason, when
#      flash-attn is absent or does not import);
#    - compile-best: torch_compile on the fastest of those (COMPILE_S).
#    Each variant's mean loss is compared with the baseline's (OUT_DIR/bench.json, bench.md, logs);
# 4. `caretune plan --bench` of the full data (multi-med 500,000 + huatuo2-sft 142,248 rows) on 4 GPUs at the
#    default recipe's measured rate: multi-med's token lengths from the real ChatMed shard's profile, huatuo2-sft's
#    resampled from the shipped sample to the full count, so packs fill as on the full data (OUT_DIR/plan.json, plan.txt).
# The whole check stops within TOTAL_S (570) seconds: the bench gets what is left after PLAN_RESERVE_S (60).
#
# DRY_RUN=1 runs the same path on CPU with the tiny Qwen3 and the variants without Liger (`make gpu-check-dry`,
# part of the tests); those that need CUDA are skipped with their reason.
# Environment: PYTHON (python3), KIT (.gpu-kit), STEPS (20), WARMUP (3), GPUS (4), TOTAL_S, PLAN_RESERVE_S, and the
# budgets above (45 s each, COMPILE_S 90).
set -uo pipefail

OUT_DIR=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PYTHON=${PYTHON:-python3}
KIT=${KIT:-.gpu-kit}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
BASELINE_S=${BASELINE_S:-45}
NO_GC_S=${NO_GC_S:-45}
UNSLOTH_S=${UNSLOTH_S:-45}
LONG_PACK_S=${LONG_PACK_S:-45}
COMPILE_S=${COMPILE_S:-90}
TOTAL_S=${TOTAL_S:-570}
PLAN_RESERVE_S=${PLAN_RESERVE_S:-60}
GPUS=${GPUS:-4}
DRY_RUN=${DRY_RUN:-0}
FULL_ROWS=(--rows multi-med=500000 --rows huatuo2-sft=142248)
started=$SECONDS

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR/bench.md"  # this run's tables only (bench --record appends)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/caretune-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "gpu-check [$((SECONDS - started)) s]: $*"; }
fail() { echo "gpu-check: error: $*" >&2; exit 1; }

[ -f recipes/qwen3-8b/lora_sft.yaml ] || fail "run from the caretune repository root"
[ -f "$KIT/kit.json" ] || fail "$KIT/kit.json not found: build the kit with \`make gpu-kit\` and copy $KIT/ along"

say "installing $KIT into $WORK/site (pip --no-index --no-deps --target; the machine's torch stays as it is)"
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
  --target "$WORK/site" "$KIT"/*.whl || fail "installing the kit failed (was it built for this Python? see $KIT/kit.json)"
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CARETUNE_GPU_KIT_MANIFEST="$PWD/$KIT/kit.json"  # bench names the kit's reason when flash-attn is absent
"$PYTHON" -m caretune.devtools.gpukit verify "$KIT" || fail "this machine's base packages do not fit the kit (above)"
if ! "$PYTHON" -c "import torchaudio" >/dev/null 2>&1; then  # as `make setup`: LLaMA-Factory imports it at module level
  say "torchaudio does not import here: using caretune/stubs/torchaudio (text training never needs it)"
  export PYTHONPATH="$PYTHONPATH:$PWD/caretune/stubs"
fi
CARETUNE=("$PYTHON" -m caretune.cli)

say "versions"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" - <<'EOF'
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

print("python", platform.python_version())
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
for name in ("llamafactory", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers", "deepspeed",
             "liger-kernel", "flash-attn", "triton", "numpy", "pyarrow"):
    try:
        print(name, version(name))
    except PackageNotFoundError:
        print(name, "not installed")
EOF
} | tee "$OUT_DIR/versions.txt"

recipe=recipes/qwen3-8b/lora_sft.yaml
liger=-liger
[ "$DRY_RUN" = 1 ] && liger=  # the tiny Qwen3 on CPU, without Liger (it needs CUDA)
pack_batch=$("$PYTHON" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['per_device_train_batch_size'])" \
  "$recipe") || fail "cannot read the default recipe's per_device_train_batch_size"
variants=(
  --variant "neat-packing-sdpa$liger=$BASELINE_S"
  --variant "neat-packing-sdpa$liger-no-gc=$NO_GC_S"
  --variant "neat-packing-sdpa$liger-unsloth-gc=$UNSLOTH_S"
  --variant "neat-packing-fa2$liger-long-pack=$LONG_PACK_S"
  --variant "compile-best=$COMPILE_S"
)
bench_s=$((TOTAL_S - PLAN_RESERVE_S - (SECONDS - started)))
[ "$bench_s" -ge 30 ] || fail "only ${bench_s} s of TOTAL_S=${TOTAL_S} left for the bench"
say "bench: ${variants[*]} ($WARMUP warm-up + $STEPS timed steps, $pack_batch packs per device as the default \
recipe unless the variant sizes its own; ${bench_s} s in all)"
# timeout ends the whole process group; bench.json keeps every variant finished before that
timeout --kill-after=10 "$bench_s" "${CARETUNE[@]}" bench "${variants[@]}" --steps "$STEPS" --warmup "$WARMUP" \
  --pack-batch "$pack_batch" --work-dir "$WORK/bench" --out "$OUT_DIR/bench.json" --record "$OUT_DIR/bench.md"
bench_status=$?
[ $bench_status = 124 ] && say "bench: stopped after ${bench_s} s; bench.json has the variants finished before"
for log in "$WORK"/bench/*/train.log; do
  [ -f "$log" ] && cp "$log" "$OUT_DIR/bench-$(basename "$(dirname "$log")").log"
done

say "plan: the full data (${FULL_ROWS[*]}) on $GPUS GPUs, with the bench's throughput"
mkdir -p "$WORK/data"
for source in chatmed huatuo; do
  case $source in
    chatmed) raw=data/sample/chatmed_consult_sample.jsonl; out=multi-med.json ;;
    huatuo) raw=data/sample/huatuo2_sft_sample.json; out=huatuo2-sft.json ;;
  esac
  "${CARETUNE[@]}" convert "$source" "$raw" --out "$WORK/data/$out" --dataset-info "$WORK/data/dataset_info.json" \
    --no-card --no-progress || fail "converting the shipped sample failed"
done
if [ "$DRY_RUN" = 1 ]; then
  "${CARETUNE[@]}" tiny-model "$WORK/tiny-qwen3" >/dev/null || fail "building the tiny Qwen3 failed"
fi
"$PYTHON" - "$recipe" "$WORK" "$DRY_RUN" <<'EOF'
import sys
from pathlib import Path

import yaml

recipe, work, dry_run = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
args = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
args["dataset_dir"] = str(work / "data")  # the sample converted above, not this checkout's data/
if dry_run:  # the default recipe on the tiny Qwen3, without Liger, as the dry run's bench measured it
    args["model_name_or_path"] = str(work / "tiny-qwen3")
    args["enable_liger_kernel"] = False
(work / "recipe.yaml").write_text(yaml.safe_dump(args, sort_keys=False), encoding="utf-8")
EOF
# multi-med's lengths from the real ChatMed shard's profile; huatuo2-sft's resampled from the shipped sample
plan_args=("$WORK/recipe.yaml" --gpus "$GPUS" --gpu h100 "${FULL_ROWS[@]}" --lengths multi-med=chatmed)
[ -f "$OUT_DIR/bench.json" ] && plan_args+=(--bench "$OUT_DIR/bench.json")
"${CARETUNE[@]}" plan "${plan_args[@]}" --json > "$OUT_DIR/plan.json"
plan_status=$?
if [ $plan_status = 0 ]; then
  "$PYTHON" -c "import json, sys; from caretune.planning.figures import format_plan; print(format_plan(json.load(open(sys.argv[1]))))" \
    "$OUT_DIR/plan.json" | tee "$OUT_DIR/plan.txt"
fi

say "done in $((SECONDS - started)) s: $OUT_DIR (bench exit $bench_status, plan exit $plan_status)"
[ $bench_status = 0 ] && [ $plan_status = 0 ]
