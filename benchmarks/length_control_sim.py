"""The length-controlled win rate where the truth is known: simulated judges over simulated answer lengths.

    python benchmarks/length_control_sim.py [--runs 200]

Each scenario draws n pairs (base and tuned answer lengths in characters) and a verdict for each from a judge whose
preference at equal length is known; `caretune.evaluation.pairwise.length_control` then reports the controlled
figure with its bootstrap interval, or withholds it. Per scenario and n: how often the figure is withheld, its mean,
how often its interval holds the truth, and how often the interval excludes 0.5.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caretune.evaluation import pairwise  # noqa: E402


def lengths(rng: random.Random, n: int, longer_share: float) -> list[tuple[int, int]]:
    """(base, tuned) lengths: the tuned answer longer in `longer_share` of the pairs, by 20-200 characters."""
    pairs = []
    for _ in range(n):
        base = rng.randint(150, 450)
        gap = rng.randint(20, 200)
        pairs.append((base, base + gap if rng.random() < longer_share else max(20, base - gap)))
    return pairs


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


SCENARIOS = {
    # name: (truth at equal length, tuned longer share, P(tuned wins | lengths))
    "length-only judge, tuned always longer": (0.5, 1.0, lambda b, t: 1.0 if t > b else 0.0),
    "length-only judge, tuned longer in 80%": (0.5, 0.8, lambda b, t: 1.0 if t > b else 0.0),
    "noisy length judge, tuned longer in 80%": (0.5, 0.8, lambda b, t: sigmoid((t - b) / 40)),
    "prefers tuned 70% at equal length, lengths even": (0.7, 0.5, lambda b, t: 0.7),
    "prefers tuned 70% at equal length, tuned longer in 80%": (0.7, 0.8, lambda b, t: 0.7),
    "mixed: 60% at equal length plus a length pull, tuned longer in 80%": (
        0.6,
        0.8,
        lambda b, t: sigmoid(math.log(0.6 / 0.4) + 1.5 * math.tanh((t - b) / 120)),
    ),
}


def simulate(name: str, n: int, seed: int) -> dict:
    truth, longer_share, judge = SCENARIOS[name]
    rng = random.Random(seed)
    pairs = lengths(rng, n, longer_share)
    results = ["tuned" if rng.random() < judge(b, t) else "base" for b, t in pairs]
    return pairwise.length_control(results, [b for b, _ in pairs], [t for _, t in pairs], seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print("| judge | n | withheld | mean controlled rate (truth) | interval holds the truth | interval excludes 0.5 | raw rate |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for name, (truth, _, _) in SCENARIOS.items():
        for n in (30, 200):
            runs = [simulate(name, n, seed) for seed in range(args.runs)]
            shown = [run for run in runs if run["win_rate"] is not None]
            withheld = 1 - len(shown) / len(runs)
            mean = sum(run["win_rate"] for run in shown) / len(shown) if shown else float("nan")
            holds = sum(run["ci"][0] <= truth <= run["ci"][1] for run in shown) / len(shown) if shown else float("nan")
            excludes = sum(run["ci"][0] > 0.5 or run["ci"][1] < 0.5 for run in shown) / len(shown) if shown else float("nan")
            raw = sum(run["raw_win_rate"] for run in runs) / len(runs)
            print(f"| {name} | {n} | {withheld:.0%} | {mean:.3f} ({truth}) | {holds:.0%} | {excludes:.0%} | {raw:.3f} |")


if __name__ == "__main__":
    main()
