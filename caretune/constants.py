"""Shared constants: the one definition of every name, prompt and number used in more than one place."""

from caretune.thinking import REASONING_TEMPLATE
from converters.names import (  # noqa: F401  (re-exported: the converters own these names)
    CHATMED_DATASET,
    CHATMED_EVAL_DATASET,
    GENERAL_DATASET,
    GENERAL_EVAL_DATASET,
    HUATUO_DATASET,
    HUATUO_EVAL_DATASET,
    MEDICAL_PREFS_DATASET,
    MEDICAL_SYSTEM_PROMPT,
    ONPOLICY_PREFS_DATASET,
)

DATA_DIR = "data"
DATASET_INFO = "dataset_info.json"

# Held-out split: rows per dataset, never more than this share of the rows kept.
DEFAULT_EVAL_SIZE = 500
MAX_EVAL_FRACTION = 0.1

# LLaMA-Factory template (Qwen3's reasoning template, non-thinking: caretune/thinking.py) and sequence budget
# shared by check, recipes and chat.
TEMPLATE = REASONING_TEMPLATE
CUTOFF_LEN = 2048

# What LLaMA-Factory writes into a training run's output_dir (and each checkpoint-N/ holds the first two, with
# trainer_state.json): the adapter, the log of every logging step, the state, and the results once it ends.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TRAINER_LOG, TRAINER_STATE = "trainer_log.jsonl", "trainer_state.json"
ALL_RESULTS = "all_results.json"  # a run's figures, written last (a predict run's too)
RESULT_FILES = ("train_results.json", ALL_RESULTS)  # written after the last step
PREDICTIONS_FILE, PREDICT_RESULTS = "generated_predictions.jsonl", "predict_results.json"  # a predict run's

BASE_MODEL = "Qwen/Qwen3-8B"
TINY_MODEL_DIR = ".cache/tiny-qwen3"  # the CPU stand-in built by `caretune tiny-model`

# `caretune bench`: the row-length profile its synthetic rows follow (caretune/data/length_profiles.json).
DEFAULT_LENGTH_PROFILE = "chatmed"

DEFAULT_TRAIN_RECIPE = "recipes/qwen3-8b/lora_sft.yaml"  # what `make train` and `caretune webui` use by default
STOP_TIMEOUT_S = 60.0  # caretune train: after SIGTERM/SIGINT, how long training gets to stop before it is killed
