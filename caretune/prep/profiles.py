"""Row-length profiles: the 101 length quantiles (p0..p100) of a dataset's rows as LLaMA-Factory keeps them, shipped
for the real ChatMed shard (caretune/data/length_profiles.json) or read from a `caretune plan --json` output; and
row lengths drawn from them (`caretune bench` builds its rows from them, `caretune plan --lengths` plans with them)."""

from __future__ import annotations

import json
import random
from importlib.resources import files
from pathlib import Path

from caretune.basics.errors import UserError

PROFILES = Path(str(files("caretune") / "data" / "length_profiles.json"))  # package data, any install


class ProfileError(UserError):
    """A length profile cannot be read; the message says why."""


def load_profile(name_or_plan: str) -> list[int]:
    """Length quantiles p0..p100: a shipped profile by name, or `length_quantiles` of a `caretune plan --json` file."""
    if Path(name_or_plan).is_file():
        try:
            quantiles = json.loads(Path(name_or_plan).read_text(encoding="utf-8"))["length_quantiles"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ProfileError(f"{name_or_plan}: not a `caretune plan --json` output ({err})") from None
    else:
        profiles = json.loads(PROFILES.read_text(encoding="utf-8"))
        if name_or_plan not in profiles:
            raise ProfileError(f"no length profile {name_or_plan!r}; one of {', '.join(profiles)}, or a plan JSON file")
        quantiles = profiles[name_or_plan]["quantiles"]
    if len(quantiles) != 101 or quantiles != sorted(quantiles) or quantiles[0] < 1:
        raise ProfileError(f"{name_or_plan}: length quantiles must be 101 ascending positive integers")
    return quantiles


def sample_lengths(quantiles: list[int], count: int, seed: int) -> list[int]:
    """Row lengths drawn from the quantile function (linear between percentiles), seeded."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(count):
        position = rng.random() * 100
        low = int(position)
        high = min(low + 1, 100)
        lengths.append(round(quantiles[low] + (quantiles[high] - quantiles[low]) * (position - low)))
    return lengths
