"""Shared constants: the one definition of every name, prompt and number used in more than one place."""

# The medical-assistant instruction: every dataset carries it as the rows' system prompt (ChatMed's
# walkthrough layout as the alpaca `instruction`), and chat/API use it as the default system prompt.
MEDICAL_SYSTEM_PROMPT = (
    "你是一名专业的医疗咨询助手。请根据用户描述的症状和问题，准确、通俗地解答，"
    "并给出合理的护理和就医建议。请提醒用户：你的回答仅供参考，不能替代医生面诊，"
    "确诊和治疗请以医生的诊断为准；如有急症，请立即就医。"
)

# Dataset names registered in dataset_info.json.
CHATMED_DATASET = "multi-med"
CHATMED_EVAL_DATASET = "multi-med-eval"
HUATUO_DATASET = "huatuo2-sft"
HUATUO_EVAL_DATASET = "huatuo2-eval"

DATA_DIR = "data"
DATASET_INFO = "dataset_info.json"

# Held-out split: rows per dataset, never more than this share of the rows kept.
DEFAULT_EVAL_SIZE = 500
MAX_EVAL_FRACTION = 0.1

# LLaMA-Factory template and sequence budget shared by check, recipes and chat.
TEMPLATE = "qwen3_nothink"
CUTOFF_LEN = 2048

BASE_MODEL = "Qwen/Qwen3-8B"
TINY_MODEL_DIR = ".cache/tiny-qwen3"  # the CPU stand-in built by `caretune tiny-model`

# `caretune bench`: the row-length profile its synthetic rows follow (caretune/data/length_profiles.json).
DEFAULT_LENGTH_PROFILE = "chatmed"

DEFAULT_TRAIN_RECIPE = "recipes/qwen3-8b/lora_sft.yaml"  # what `make train` and `caretune webui` use by default
