"""The statistics of evaluation, in one place: McNemar's exact test for paired multiple-choice answers, Wilson
intervals for shares, a bootstrap interval of a clipped mean, AlpacaEval 2's length term and its ridge-regularised
logistic fit, and agreement and macro F1 against labels."""

from __future__ import annotations

import math
import random
from math import comb

SIGNIFICANCE = 0.05
RIDGE = 1.0  # the length coefficient's ridge: one pseudo-observation's weight (keeps a separating fit finite)
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the discordant questions as a fair coin's flips."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_accuracy(reference: dict[str, bool], other: dict[str, bool]) -> dict | None:
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


def wilson(successes: int, total: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a share."""
    if total == 0:
        return None
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def clipped_mean(values: list[float]) -> float:
    return min(1.0, max(0.0, sum(values) / len(values)))


def bootstrap_ci(values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% interval of the clipped mean from resampling the examples with replacement."""
    rng = random.Random(seed)
    means = sorted(clipped_mean(rng.choices(values, k=len(values))) for _ in range(samples))
    return [round(means[int(0.025 * samples)], 4), round(means[min(samples - 1, int(0.975 * samples))], 4)]


def percentile_interval(values: list[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles of bootstrap draws: a 95% interval."""
    ordered = sorted(values)
    return [round(ordered[int(0.025 * len(ordered))], 4), round(ordered[int(0.975 * len(ordered)) - 1], 4)]


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value)) if value >= 0 else math.exp(value) / (1 + math.exp(value))


def length_feature(differences: list[float]) -> list[float]:
    """AlpacaEval 2's length term: tanh of the length difference over its standard deviation (ddof 1, as pandas)."""
    import statistics

    scale = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return [math.tanh(d / scale) if scale else 0.0 for d in differences]


def fit_length_logistic(outcomes, features) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a + b * x) fitted to fractional outcomes by Newton's method; a ridge on b only, so a
    separating fit stays finite and the model term is not pulled toward 50%."""
    import numpy as np

    y, x = np.asarray(outcomes, dtype=float), np.asarray(features, dtype=float)
    a = b = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a + b * x)))
        w = p * (1 - p)
        ga, gb = float(np.sum(p - y)) + 1e-6 * a, float(np.sum((p - y) * x)) + RIDGE * b
        haa, hab, hbb = float(w.sum()) + 1e-6, float((w * x).sum()), float((w * x * x).sum()) + RIDGE
        det = haa * hbb - hab * hab
        step_a, step_b = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = max(-30.0, min(30.0, a - step_a)), b - step_b
        if abs(step_a) + abs(step_b) < 1e-9:
            break
    return a, b


def separates(outcomes: list[float], features: list[float]) -> bool:
    """Whether the length term alone sorts every win from every loss (ties aside): the logistic fit then has no
    finite length coefficient, and whatever the model term shows is an artefact of the ridge."""
    wins = [x for y, x in zip(outcomes, features) if y == 1.0]
    losses = [x for y, x in zip(outcomes, features) if y == 0.0]
    if not wins or not losses:
        return False
    return min(wins) > max(losses) or max(wins) < min(losses)


def f1(truth: list[bool], judged: list[bool], positive: bool) -> float:
    """F1 of one class over (truth, judged) pairs."""
    hits = sum(t == positive and j == positive for t, j in zip(truth, judged))
    predicted = sum(j == positive for j in judged)
    actual = sum(t == positive for t in truth)
    return 2 * hits / (predicted + actual) if predicted + actual else 1.0


def agreement(truth: list[bool], judged: list[bool]) -> dict:
    """Agreement, macro F1 and the confusion counts of `judged` against `truth`, pair by pair."""
    n = len(truth)
    return {
        "n": n,
        "agreement": round(sum(t == j for t, j in zip(truth, judged)) / n, 4) if n else None,
        "macro_f1": round((f1(truth, judged, True) + f1(truth, judged, False)) / 2, 4) if n else None,
        "confusion": {
            "both_met": sum(t and j for t, j in zip(truth, judged)),
            "both_not_met": sum(not t and not j for t, j in zip(truth, judged)),
            "judge_only_met": sum(j and not t for t, j in zip(truth, judged)),
            "label_only_met": sum(t and not j for t, j in zip(truth, judged)),
        },
    }
