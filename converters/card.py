"""What a dataset's data card shows, collected while a conversion streams (bounded memory).

The card itself (Markdown, token-length histogram) is written by `caretune.prep.datacard`, which has the tokenizer.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from converters.care import CARE_REMINDER_ADDED, EMERGENCY_REMINDER_ADDED, EMERGENCY_WITHOUT_URGENCY, NO_CARE_ADVICE
from converters.choices import FILTER_REASONS
from converters.quality import THINK_REMOVED, WRAPPER_STRIPPED

CARD_SUFFIX = ".card.md"
HISTOGRAM_SUFFIX = ".lengths.png"
EXAMPLES_PER_REASON = 2
EXTREMES = 3  # longest and shortest kept rows shown
LENGTH_SAMPLE_ROWS = 2000  # kept rows whose token lengths make the histogram
EXAMPLE_REASONS = frozenset(
    (
        *FILTER_REASONS,
        NO_CARE_ADVICE,
        EMERGENCY_WITHOUT_URGENCY,
        THINK_REMOVED,
        WRAPPER_STRIPPED,
        CARE_REMINDER_ADDED,
        EMERGENCY_REMINDER_ADDED,
    )
)
_LOW_BITS = (1 << 32) - 1


@dataclass
class CardCollector:
    """Feed kept rows (`offer`) and per-batch examples (`add_examples`) in input order."""

    examples: dict[str, list[tuple[int, list[tuple[str, str]]]]] = field(default_factory=dict)
    _longest: list[tuple[int, int, bytes]] = field(default_factory=list)  # min-heap of (chars, -line, record)
    _shortest: list[tuple[int, int, bytes]] = field(default_factory=list)  # min-heap of (-chars, line, record)
    _sample: list[tuple[int, int, bytes]] = field(default_factory=list)  # min-heap of (-low key bits, line, record)

    def offer(self, lines: list[int], keys: list[int], records: list[bytes], chars: list[int]) -> None:
        """Kept (not duplicate) rows in input order, as columns. Each heap first picks its candidates with one
        comparison a row (the heaps' thresholds only tighten), so most rows cost no heap operation."""
        longest, shortest, sample = self._longest, self._shortest, self._sample
        floor = longest[0][0] if len(longest) >= EXTREMES else -1
        for i in [i for i, n in enumerate(chars) if n > floor]:  # a tie keeps the earlier row
            _keep_top(longest, (chars[i], -lines[i], records[i]), EXTREMES)
        ceiling = -shortest[0][0] if len(shortest) >= EXTREMES else float("inf")
        for i in [i for i, n in enumerate(chars) if n <= ceiling]:
            _keep_top(shortest, (-chars[i], lines[i], records[i]), EXTREMES)
        # The key's low bits are as random as its high bits, which choose the eval split: an unbiased sample.
        ceiling = -sample[0][0] if len(sample) >= LENGTH_SAMPLE_ROWS else _LOW_BITS
        for i in [i for i, key in enumerate(keys) if key & _LOW_BITS <= ceiling]:
            _keep_top(sample, (-(keys[i] & _LOW_BITS), lines[i], records[i]), LENGTH_SAMPLE_ROWS)

    def add_examples(self, examples: list[tuple[int, str, list[tuple[str, str]]]]) -> None:
        """Keep the first few rejected rows of each reason, for the card's examples."""
        for line, reason, turns in examples:
            kept = self.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append((line, turns))

    def longest(self) -> list[tuple[int, bytes]]:
        """(line, record) of the longest kept rows, longest first."""
        return [(-line, record) for _, line, record in sorted(self._longest, reverse=True)]

    def shortest(self) -> list[tuple[int, bytes]]:
        """(line, record) of the shortest kept rows, shortest first."""
        return [(line, record) for _, line, record in sorted(self._shortest, reverse=True)]

    def sample(self) -> list[bytes]:
        """Records of the length sample, in input order."""
        return [record for _, _, record in sorted(self._sample, key=lambda entry: entry[1])]


def _keep_top(heap: list, entry: tuple, size: int) -> None:
    """Keep the `size` largest entries in a min-heap."""
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)
