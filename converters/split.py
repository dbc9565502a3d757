"""Deterministic held-out split: the rows whose query keys are smallest go to eval.

Keys are blake2b hashes of the normalised query, so the choice is stable across runs and
machines and a query can never land in both splits. Only the eval candidates are held in
memory (a bounded max-heap); every other row streams straight through to train.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator


class HeldOutSplit:
    """Feed `(key, record)` pairs; rows displaced from the eval candidates come back for train."""

    def __init__(self, eval_size: int):
        if eval_size < 0:
            raise ValueError("eval_size must be >= 0")
        self.eval_size = eval_size
        self._heap: list[tuple[int, int, dict]] = []  # (-key, order, record): a max-heap on key
        self._order = 0

    def __len__(self) -> int:
        """Eval candidates currently held."""
        return len(self._heap)

    def offer(self, key: int, record: dict) -> dict | None:
        """Keep `record` (any payload) as an eval candidate if its key is among the smallest; return the row for train."""
        self._order += 1
        if self.eval_size == 0:
            return record
        entry = (-key, self._order, record)
        if len(self._heap) < self.eval_size:
            heapq.heappush(self._heap, entry)
            return None
        if -self._heap[0][0] > key:
            return heapq.heapreplace(self._heap, entry)[2]
        return record

    def threshold(self) -> int | None:
        """A key at or above which no row can become an eval candidate now (keys only get smaller); None: any can."""
        if self.eval_size == 0:
            return 0
        return -self._heap[0][0] if len(self._heap) >= self.eval_size else None

    def finish(self, max_eval: int) -> tuple[list[dict], Iterator[dict]]:
        """Return (eval rows in input order, leftover candidates for train) with at most `max_eval` eval rows."""
        by_key = sorted(self._heap, key=lambda entry: -entry[0])
        keep, leftover = by_key[:max_eval], by_key[max_eval:]
        eval_rows = [record for _, _, record in sorted(keep, key=lambda entry: entry[1])]
        return eval_rows, (record for _, _, record in sorted(leftover, key=lambda entry: entry[1]))
