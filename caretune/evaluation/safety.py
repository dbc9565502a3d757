"""Safety metrics over generated answers. Each rule is a documented keyword-and-pattern test.

- advises_care, urges_emergency, is_urgent_question: the care rules the converters use
  (converters/care.py, documented and unit-tested there).
- beyond the reminder: advises_care on the answer with the verbatim reminder sentences removed. Conversion
  appends CARE_REMINDER to training answers that lack care advice, so a model can reach 100% on the rule by
  learning that one sentence; this count tells a careful answer from the boilerplate.
- has_think: the answer contains `<think>` or `</think>` (caretune.generation.think_blocks: evaluation scores answers as
  generated, so a leak is counted).
- empty: nothing but whitespace.
- cut: the answer used the whole max_new_tokens budget (so it probably stops mid-sentence).
"""

from __future__ import annotations

from caretune.generation.think_blocks import has_think
from converters.care import advises_care, is_urgent_question, urges_emergency, without_reminders

__all__ = [
    "advises_care",
    "advises_care_beyond_reminder",
    "care_comparison",
    "emergency_metrics",
    "has_think",
    "is_urgent_question",
    "safety_metrics",
    "urges_emergency",
]


def advises_care_beyond_reminder(answer: str) -> bool:
    """Whether the answer advises care in its own words, not only through the verbatim reminder sentences."""
    return advises_care(without_reminders(answer))


def safety_metrics(answers: list[str], token_counts: list[int], max_new_tokens: int) -> dict:
    """Counts and shares over a set of generated answers."""
    n = len(answers)
    care = sum(advises_care(a) for a in answers)
    own = sum(advises_care_beyond_reminder(a) for a in answers)
    return {
        "answers": n,
        "advises_care": care,
        "advises_care_share": round(care / n, 4) if n else 0.0,
        "advises_care_beyond_reminder": own,
        "advises_care_beyond_reminder_share": round(own / n, 4) if n else 0.0,
        "care_only_through_reminder": care - own,
        "think_blocks": (think := sum(has_think(a) for a in answers)),
        "think_blocks_share": round(think / n, 4) if n else 0.0,
        "empty": sum(not a.strip() for a in answers),
        "cut_at_max_new_tokens": (cut := sum(count >= max_new_tokens for count in token_counts)),
        "cut_at_max_new_tokens_share": round(cut / n, 4) if n else 0.0,
    }


def emergency_metrics(answers: list[str], categories: list[str]) -> dict:
    """How many emergency prompts got an explicit seek-emergency-care-now answer, and which missed."""
    urged = [urges_emergency(a) for a in answers]
    return {
        "prompts": len(answers),
        "urges_emergency": sum(urged),
        "urges_emergency_share": round(sum(urged) / len(answers), 4) if answers else 0.0,
        "missed": [c for c, ok in zip(categories, urged) if not ok],
    }


def care_comparison(questions: list[str], answers: list[str], references: list[str]) -> dict:
    """The care rules on the model's answers and on the held-out references to the same questions.

    Shares of answers advising care (as the rule counts it, and beyond the verbatim reminder), and among questions
    the emergency rule flags as urgent, of answers urging emergency care; the references' shares are the rate the
    training data teaches, and their share beyond the reminder is the data's own before any reminder was added.
    """
    urgent = [i for i, question in enumerate(questions) if is_urgent_question(question)]

    def shares(texts: list[str]) -> dict:
        cared = sum(advises_care(t) for t in texts)
        own = sum(advises_care_beyond_reminder(t) for t in texts)
        urged = sum(urges_emergency(texts[i]) for i in urgent)
        return {
            "advises_care_share": round(cared / len(texts), 4) if texts else 0.0,
            "advises_care_beyond_reminder_share": round(own / len(texts), 4) if texts else 0.0,
            "urges_emergency_share": round(urged / len(urgent), 4) if urgent else None,
        }

    return {"questions": len(questions), "urgent_questions": len(urgent), "model": shares(answers), "reference": shares(references)}
