# caretune — `make demo` runs the CPU pipeline on the shipped sample, `make test` runs the tests.
# Both set up .venv first when needed (`make setup`, idempotent).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.caretune-setup
TORCH_VERSION ?= 2.13.0
# Optional package index for torch, e.g. https://download.pytorch.org/whl/cpu on a machine without a local CPU wheel.
TORCH_INDEX ?=
# Tests and the demo use local files only; nothing waits on a model hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# `make train [RECIPE=...] [GPUS=N per node] [NODES=M]`; multi-node: also NODE_RANK=0 MASTER_ADDR=... MASTER_PORT=...
# on each node. plan, preflight and train read GPUS and NODES alike.
RECIPE ?= recipes/qwen3-8b/lora_sft.yaml
GPUS ?=
NODES ?=

CHAT_RECIPE ?= recipes/qwen3-8b/chat.yaml
EXPORT_RECIPE ?= recipes/qwen3-8b/export.yaml
EVAL_RECIPE ?= recipes/qwen3-8b/predict.yaml
# CMMLU-style (dev/, test/) or C-Eval-style (dev/, val/) folders of per-subject CSVs: the medical suite's, and the
# general suite's (CMMLU's and C-Eval's folders; the suite takes its fixed selection: caretune/evaluation/suites.py)
MCQ_SOURCES ?= data/sample/mcq
GENERAL_SOURCES ?= data/sample/mcq-general
HOST ?= 127.0.0.1
PORT ?=

.PHONY: setup lint demo test test-all convert-bench train-bench plan clean clean-data train preflight chat api webui export eval judge report prefs dpo judge-dpo \
	gpu-kit gpu-check-dry

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile caretune/devtools/setup_venv.py
	$(PYTHON) caretune/devtools/setup_venv.py --venv $(VENV) --torch $(TORCH_VERSION) $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX))
	@touch $(STAMP)

# Style, import order and formatting (ruff), the import layers (import-linter, contracts in pyproject.toml), and shipped recipes equal to their generator (CI runs this before the tests;
# `make test` passes on edited recipes: it checks the rules every recipe keeps, not the generator's bytes).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/caretune recipes --check

# The main job on the embedded default, on CPU: convert + register + check the shipped sample, plan the
# Qwen3-8B run, LoRA-train the tiny Qwen3 stand-in, evaluate it and its base alike (caretune eval), report both,
# answer one question.
# One line per stage; each stage's full output goes to saves/demo/.
demo: setup
	$(BIN)/python -m caretune.devtools.demo

preflight: setup
	$(BIN)/caretune preflight $(RECIPE) $(if $(GPUS),--gpus $(GPUS)) $(if $(NODES),--nodes $(NODES))

train: setup
	$(BIN)/caretune train $(RECIPE) $(if $(GPUS),--gpus $(GPUS)) $(if $(NODES),--nodes $(NODES))

chat: setup
	$(BIN)/caretune chat $(CHAT_RECIPE)

# Loopback by default; another HOST needs API_KEY=<secret> in the environment.
api: setup
	$(BIN)/caretune api $(CHAT_RECIPE) --host $(HOST) $(if $(PORT),--port $(PORT))

webui: setup
	$(BIN)/caretune webui $(RECIPE) --host $(HOST) $(if $(PORT),--port $(PORT))

export: setup
	$(BIN)/caretune export $(EXPORT_RECIPE)

# The tuned model and its base, generated alike (same recipe settings), on both multiple-choice suites; `make report`
# then sets the medical gain beside the general cost.
MCQ_ARGS = $(foreach source,$(MCQ_SOURCES),--source $(source)) $(foreach source,$(GENERAL_SOURCES),--general-source $(source))
eval: setup
	$(BIN)/caretune eval $(EVAL_RECIPE)
	$(BIN)/caretune eval $(EVAL_RECIPE) --base
	$(BIN)/caretune mcq $(CHAT_RECIPE) --suite all $(MCQ_ARGS)
	$(BIN)/caretune mcq $(CHAT_RECIPE) --suite all --base $(MCQ_ARGS)

# `make judge JUDGE_URL=http://127.0.0.1:8001/v1 JUDGE_MODEL=NAME`: the shipped rubric set on the base model and on
# the tuned one, then base against tuned on 200 held-out questions and on the 30 general prompts (forgetting in free
# answers) (key: JUDGE_API_KEY in the environment).
JUDGE_URL ?= http://127.0.0.1:8001/v1
JUDGE_MODEL ?=
RUBRICS ?= caretune/data/rubrics_zh.jsonl
JUDGE_ARGS = --judge-url $(JUDGE_URL) --judge-model $(JUDGE_MODEL)
judge: setup
	$(BIN)/caretune judge rubric $(RUBRICS) --recipe $(EVAL_RECIPE) --base $(JUDGE_ARGS)
	$(BIN)/caretune judge rubric $(RUBRICS) --recipe $(EVAL_RECIPE) $(JUDGE_ARGS)
	base=$$($(BIN)/caretune runs base-copy $(EVAL_RECIPE)) && \
	$(BIN)/caretune judge pairwise $$base $(EVAL_RECIPE) $(JUDGE_ARGS) && \
	$(BIN)/caretune judge pairwise $$base $(EVAL_RECIPE) --general $(JUDGE_ARGS)

# The preference stage, after `make train`: `make prefs JUDGE_URL=... JUDGE_MODEL=...` samples the SFT model's answers
# to the prompts `caretune convert prefs` kept out of SFT and keeps the pairs the judge decides in both orders;
# `make dpo` trains DPO from the SFT adapter on them; `make judge-dpo` judges SFT against SFT+DPO.
DPO_RECIPE ?= recipes/qwen3-8b/dpo.yaml
EVAL_DPO_RECIPE ?= recipes/qwen3-8b/predict_dpo.yaml
prefs: setup
	$(BIN)/caretune prefs build $(DPO_RECIPE) $(JUDGE_ARGS)

dpo: setup
	$(BIN)/caretune train $(DPO_RECIPE) $(if $(GPUS),--gpus $(GPUS)) $(if $(NODES),--nodes $(NODES))

judge-dpo: setup
	$(BIN)/caretune judge pairwise $(EVAL_RECIPE) $(EVAL_DPO_RECIPE) $(JUDGE_ARGS)

# RUNS: run folders to compare, e.g. saves/qwen3-8b/base saves/qwen3-8b/lora; by default EVAL_RECIPE's and its base's
RUNS ?=
report: setup
	$(BIN)/caretune report $(if $(RUNS),$(RUNS),--recipe $(EVAL_RECIPE))

# The fast tier (offline); `make test-all` adds the slow tier (training, DeepSpeed, servers, browsers, races,
# big files) and the tests that need a package index. Both run in TEST_WORKERS processes (a test file stays in one).
# CI runs test-all.
TEST_WORKERS ?= 2
# Bytecode is cached (in __pycache__/, which git ignores) even where the shell sets PYTHONDONTWRITEBYTECODE: else each
# test process compiles caretune and pytest's rewritten test modules anew (collecting: 12 s without the cache, 4.6 s with).
TEST_ENV := $(OFFLINE) PYTHONDONTWRITEBYTECODE=
test: setup
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: setup
	$(TEST_ENV) $(BIN)/python -m pytest -m "" -n $(TEST_WORKERS) --dist loadfile

# Conversion time and memory against the walkthrough's approach (benchmarks/convert_bench.py; `caretune bench` measures training).
convert-bench: setup
	$(BIN)/python benchmarks/convert_bench.py

# Training throughput: Qwen3-8B's shape on a GPU, the tiny Qwen3 on CPU; results and a Markdown table go to the ignored
# benchmarks/out/ (benchmarks/README.md keeps the curated, dated tables).
train-bench: setup
	$(OFFLINE) $(BIN)/caretune bench --out benchmarks/out/train-bench.json --record benchmarks/out/train-bench.md

# Offline GPU machines: `make gpu-kit` writes .gpu-kit/ (wheels for CPython $(KIT_PYTHON) on manylinux x86_64, no torch);
# copy the repository with it, then run `bash benchmarks/gpu_check.sh OUT_DIR` there. FULL=1 adds the WebUI/API and
# BLEU/ROUGE packages, BASE=1 numpy/pandas/pyarrow/scipy/matplotlib (for a machine without them).
KIT_PYTHON ?= 3.12
FULL ?=
BASE ?=
gpu-kit: setup
	$(BIN)/python -m caretune.devtools.gpukit build .gpu-kit --python $(KIT_PYTHON) $(if $(FULL),--full) $(if $(BASE),--with-base)

# The GPU check's whole path on CPU with the tiny Qwen3: a kit for this Python, installed into a venv that holds
# only torch, the base packages and pip (so a package missing from the kit fails here too).
DRY := .cache/gpu-check-dry
gpu-check-dry: setup
	$(BIN)/python -m caretune.devtools.gpukit build $(DRY)/kit --python $$($(BIN)/python -c "import sys; print('%d.%d' % sys.version_info[:2])")
	$(BIN)/python -m caretune.devtools.gpukit bare $(DRY)/env
	DRY_RUN=1 KIT=$(DRY)/kit PYTHON=$(DRY)/env/bin/python STEPS=2 WARMUP=1 BASELINE_S=120 NO_GC_S=120 COMPILE_S=240 \
	  TOTAL_S=1200 \
	  bash benchmarks/gpu_check.sh $(DRY)/out

# `make plan [RECIPE=...] [GPUS=4] [NODES=1] [GPU=h800] [BENCH=benchmarks/out/train-bench.json]`: rows, tokens, memory,
# time and GPU-hours before launching; BENCH uses a GPU run of `make train-bench` for the throughput.
GPU ?= h800
BENCH ?=
plan: setup
	$(OFFLINE) $(BIN)/caretune plan $(RECIPE) --gpu $(GPU) $(if $(GPUS),--gpus $(GPUS)) $(if $(NODES),--nodes $(NODES)) $(if $(BENCH),--bench $(BENCH))

# Conversion outputs only (the shipped data/sample/ stays).
clean-data:
	find data -maxdepth 1 -type f -delete

# Every output of runs on this machine: conversions, runs and reports, caches (tiny model, tokenizer, lengths,
# WebUI state), benchmark results and the GPU kit. .venv and the tracked dataset_info.json stay.
clean: clean-data
	rm -rf saves report .cache benchmarks/out .gpu-kit
