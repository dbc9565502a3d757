"""Multiple-choice suites: the medical one (every subject of the medical sources) and a general one, a fixed
stratified selection of non-medical CMMLU and C-Eval subjects, to see what the medical gain cost.

The general suite takes, from CMMLU's test split, 4 subjects in each of CMMLU's groups STEM, Humanities, Social
Sciences and China-specific, and from C-Eval's val split 2 subjects in each of STEM, Humanities and Social Science;
from each subject QUESTIONS_PER_SUBJECT questions drawn with a fixed seed from the question numbers (all of them
when a subject has fewer). That is 16 x 25 + 6 x 25 = at most 550 questions (C-Eval's val subjects hold 19 to 60).
CMMLU and C-Eval are CC BY-NC-SA 4.0 and are not shipped: give their folders with --general-source. A question's id
is the hash of its subject and text, so a paired comparison matches the same questions across runs.
"""

from __future__ import annotations

import hashlib
import random

from caretune.recipe import MEDICAL_SUITE

MEDICAL, GENERAL = MEDICAL_SUITE, "general"
SUITES = (MEDICAL, GENERAL)
QUESTIONS_PER_SUBJECT = 25
SELECTION_SEED = 20261203

# group -> (benchmark, subject); CMMLU's groups as its authors define them, C-Eval's as its mapping does.
GENERAL_SUITE: dict[str, tuple[tuple[str, str], ...]] = {
    "STEM": (
        ("cmmlu", "college_mathematics"),
        ("cmmlu", "high_school_physics"),
        ("cmmlu", "computer_science"),
        ("cmmlu", "astronomy"),
        ("ceval", "advanced_mathematics"),
        ("ceval", "college_programming"),
    ),
    "Humanities": (
        ("cmmlu", "world_history"),
        ("cmmlu", "philosophy"),
        ("cmmlu", "jurisprudence"),
        ("cmmlu", "logical"),
        ("ceval", "art_studies"),
        ("ceval", "law"),
    ),
    "Social Sciences": (
        ("cmmlu", "economics"),
        ("cmmlu", "sociology"),
        ("cmmlu", "management"),
        ("cmmlu", "professional_psychology"),
        ("ceval", "college_economics"),
        ("ceval", "education_science"),
    ),
    "China-specific": (
        ("cmmlu", "chinese_history"),
        ("cmmlu", "chinese_literature"),
        ("cmmlu", "chinese_civil_service_exam"),
        ("cmmlu", "chinese_food_culture"),
    ),
}


def general_subjects() -> dict[str, str]:
    """Subject file name -> its group, for every subject of the general suite."""
    return {subject: group for group, members in GENERAL_SUITE.items() for _, subject in members}


def select_questions(subject: str, count: int) -> list[int]:
    """The question numbers (0-based) the general suite takes from a subject of `count` questions, in order."""
    if count <= QUESTIONS_PER_SUBJECT:
        return list(range(count))
    rng = random.Random(f"{SELECTION_SEED}:{subject}")
    return sorted(rng.sample(range(count), QUESTIONS_PER_SUBJECT))


def question_ids(subject: str, questions: list[dict]) -> list[str]:
    """Stable ids of a subject's questions: the hash of the subject, the text and the choices; a question repeated in
    the subject gets its occurrence number, so no two questions share an id."""
    ids, seen = [], {}
    for question in questions:
        text = "\n".join([subject, question["question"], *(question[choice] for choice in "ABCD")])
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        seen[digest] = seen.get(digest, 0) + 1
        ids.append(digest if seen[digest] == 1 else f"{digest}#{seen[digest]}")
    return ids
