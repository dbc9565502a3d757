"""A compact set of 64-bit query keys: open addressing over `array("Q")`, 16 to 32 bytes a key.

A Python `set` of such keys costs about 80 bytes a key (an int object and a hash-table slot), which is most
of a conversion's memory at ChatMed's half a million rows. Keys are blake2b digests, uniformly spread, so
their low bits index the table directly and linear probing stays short at the load factor kept here.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

_EMPTY = 0  # a free slot; the key 0 itself is remembered apart
_MIN_SLOTS = 1 << 10
MAX_LOAD = 0.5


class KeySet:
    """A set of integers in [0, 2**64): `add` reports whether a key was new, `add_new` which of a batch were,
    `in` tests membership."""

    def __init__(self, keys: Iterable[int] = ()):
        self._slots = array("Q", bytes(8 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        self._count = 0
        self._has_zero = False
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        """Keys held."""
        return self._count + self._has_zero

    def __contains__(self, key: int) -> bool:
        if key == _EMPTY:
            return self._has_zero
        return self._slots[self._slot(key)] == key

    def add(self, key: int) -> bool:
        """Add `key`; True if it was not there before."""
        return bool(self.add_new((key,)))

    def add_new(self, keys: Iterable[int]) -> list[int]:
        """Add `keys`; the positions in `keys` of those that were not held before (a repeat counts once).

        One call a batch, with the probe written out here: a method call a key was most of the time spent."""
        fresh: list[int] = []
        slots, mask, limit = self._slots, self._mask, MAX_LOAD * len(self._slots)
        for position, key in enumerate(keys):
            if key == _EMPTY:
                if not self._has_zero:
                    self._has_zero = True
                    fresh.append(position)
                continue
            index = key & mask
            while (held := slots[index]) != key:
                if held == _EMPTY:
                    slots[index] = key
                    fresh.append(position)
                    self._count += 1
                    if self._count > limit:
                        self._grow()
                        slots, mask, limit = self._slots, self._mask, MAX_LOAD * len(self._slots)
                    break
                index = (index + 1) & mask
        return fresh

    def _slot(self, key: int) -> int:
        """The slot holding `key`, or the free slot where it would go."""
        slots, mask = self._slots, self._mask
        index = key & mask
        while slots[index] != key and slots[index] != _EMPTY:
            index = (index + 1) & mask
        return index

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = 2 * len(old) - 1
        slots, mask = self._slots, self._mask
        for key in old:
            if key != _EMPTY:
                index = key & mask
                while slots[index] != _EMPTY:
                    index = (index + 1) & mask
                slots[index] = key
