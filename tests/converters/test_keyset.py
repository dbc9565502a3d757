"""KeySet: the compact dedupe set behaves as a Python set of 64-bit keys, in a fraction of the memory."""

import random
import sys

import pytest

from converters.keyset import KeySet
from converters.records import query_key


def test_keyset_agrees_with_a_set_through_growth_and_collisions():
    rng = random.Random(7)
    keys = KeySet()
    reference: set[int] = set()
    pool = [0, 1, 2**64 - 1, 1024, 2048, *(rng.getrandbits(64) for _ in range(6000))]
    pool += [key & ~0x3FF for key in pool[:2000]]  # same low bits: long probe runs
    for key in [rng.choice(pool) for _ in range(30000)]:
        assert keys.add(key) == (key not in reference)
        reference.add(key)
    assert len(keys) == len(reference)
    assert all(key in keys for key in reference)
    assert not any(key in keys for key in (3, 5, 2**63 + 11) if key not in reference)


@pytest.mark.slow
def test_keyset_holds_half_a_million_query_keys_in_under_a_third_of_a_sets_memory():
    queries = [f"头疼怎么办{i}" for i in range(500_000)]
    keys = KeySet(query_key(q) for q in queries)
    assert len(keys) == 500_000
    compact = sys.getsizeof(keys._slots)
    as_set = {query_key(q) for q in queries}
    python_set = sys.getsizeof(as_set) + sum(sys.getsizeof(key) for key in as_set)
    assert compact <= 16 * 2**20 and compact * 3 <= python_set, (compact, python_set)


def test_add_new_reports_the_first_occurrence_of_each_new_key_through_growth():
    rng = random.Random(11)
    pool = [0, 2**64 - 1, 1024, 2048, *(rng.getrandbits(64) for _ in range(3000))]
    pool += [key & ~0x3FF for key in pool[:1000]]  # same low bits: long probe runs
    keys, reference = KeySet(), set()
    for _ in range(12):  # batches that repeat keys within themselves and across batches, growing the table
        batch = [rng.choice(pool) for _ in range(1500)]
        expected = []
        for index, key in enumerate(batch):
            if key not in reference:
                expected.append(index)
                reference.add(key)
        assert keys.add_new(batch) == expected
    assert len(keys) == len(reference)
    assert all(key in keys for key in reference)
