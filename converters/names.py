"""What the converted datasets are called and the prompt they carry: the converters' own names, which the
rest of caretune (recipes, chat, API, export) reads from here."""

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
GENERAL_DATASET = "general-zh"  # general (non-medical) Chinese instructions, mixed in against forgetting
GENERAL_EVAL_DATASET = "general-zh-eval"
MEDICAL_PREFS_DATASET = "prefs-med"  # preference pairs (DPO), medical: `caretune convert prefs`
MEDICAL_PREFS_EVAL_DATASET = "prefs-med-eval"
GENERAL_PREFS_DATASET = "prefs-general"  # preference pairs of a general set: `caretune convert prefs --domain general`
GENERAL_PREFS_EVAL_DATASET = "prefs-general-eval"
ONPOLICY_PREFS_DATASET = "prefs-onpolicy"  # pairs of the SFT model's own answers, judged: `caretune prefs build`
