"""Base against tuned on the same multiple-choice questions: McNemar's exact test over the questions one model
answered right and the other wrong, so that a change in accuracy is read against the noise of the suite's size."""

from __future__ import annotations

from math import comb

SIGNIFICANCE = 0.05


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the discordant questions as a fair coin's flips."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(reference: dict[str, bool], other: dict[str, bool]) -> dict | None:
    """`other` against `reference` on the questions both answered (matched by id); None when none are shared."""
    shared = sorted(set(reference) & set(other))
    if not shared:
        return None
    gained = sum(other[q] and not reference[q] for q in shared)
    lost = sum(reference[q] and not other[q] for q in shared)
    before = sum(reference[q] for q in shared) / len(shared)
    after = sum(other[q] for q in shared) / len(shared)
    p_value = mcnemar_exact(gained, lost)
    return {
        "questions": len(shared),
        "reference_accuracy": round(before, 4),
        "accuracy": round(after, 4),
        "change_points": round(100 * (after - before), 2),
        "gained": gained,
        "lost": lost,
        "p_value": float(f"{p_value:.4g}"),
        "beyond_noise": p_value < SIGNIFICANCE,
    }


def verdict(suite: str, comparison: dict) -> str:
    """One line: did the suite's accuracy move beyond the noise, and which way."""
    figures = (
        f"{comparison['accuracy']:.1%} against {comparison['reference_accuracy']:.1%} "
        f"({comparison['change_points']:+.1f} points; {comparison['gained']} gained, {comparison['lost']} lost "
        f"of {comparison['questions']} questions; McNemar p = {comparison['p_value']:.3g})"
    )
    if not comparison["beyond_noise"]:
        return f"{suite}: {figures}: no change beyond the noise"
    direction = "rose" if comparison["change_points"] > 0 else "dropped"
    return f"{suite}: {figures}: {direction} beyond the noise"
