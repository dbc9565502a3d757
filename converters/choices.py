"""The names a conversion's options choose from, in a module that compiles nothing, so the CLI starts fast.

converters/quality.py, care.py and chatmed.py define what each name does.
"""

# Quality filters: the skip reasons of converters/quality.py.
TRUNCATED_ANSWER = "truncated_answer"
AI_SELF_REFERENCE = "ai_self_reference"
SHORT_ANSWER = "short_answer"
ANSWER_REPEATS_QUESTION = "answer_repeats_question"
CONTACT_OR_AD = "contact_or_ad"
DEGENERATE_REPETITION = "degenerate_repetition"
JAILBREAK = "jailbreak"
FILTER_REASONS = tuple(
    sorted(
        (
            TRUNCATED_ANSWER,
            AI_SELF_REFERENCE,
            SHORT_ANSWER,
            ANSWER_REPEATS_QUESTION,
            CONTACT_OR_AD,
            DEGENERATE_REPETITION,
            JAILBREAK,
        )
    )
)

# Care reminder policies (converters/care.py).
APPEND, DROP, OFF = "append", "drop", "off"
CARE_POLICIES = (APPEND, DROP, OFF)

# Where ChatMed rows carry the medical prompt (converters/chatmed.py).
SYSTEM_LAYOUT, WALKTHROUGH_LAYOUT = "system", "walkthrough"
LAYOUTS = (SYSTEM_LAYOUT, WALKTHROUGH_LAYOUT)
