"""The README is short, opens with the two commands, and states only recipe values the shipped recipes have."""

from __future__ import annotations

import re

import yaml

from tests.helpers import ROOT

README = ROOT / "README.md"
RECIPE_NAME = re.compile(r"`(?:recipes/qwen3-8b/)?(lora_sft(?:_walkthrough)?\.yaml)`")
KEY_VALUE = re.compile(r"`([a-z_]+): ([^`]+)`")


def recipe_values_named(text: str) -> list[tuple[str, str, str]]:
    """(recipe file, key, value) for every `key: value` on a line that names one Qwen3-8B training recipe."""
    found = []
    for line in text.splitlines():
        names = set(RECIPE_NAME.findall(line))
        if len(names) == 1:
            found += [(names.pop(), key, value) for key, value in KEY_VALUE.findall(line)]
    return found


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220
    first_block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]


def test_recipe_values_in_the_readme_are_the_shipped_ones():
    stated = recipe_values_named(README.read_text(encoding="utf-8"))
    assert ("lora_sft.yaml", "flash_attn") in {(name, key) for name, key, _ in stated}  # the attention backend is named
    for name, key, value in stated:
        recipe = yaml.safe_load((ROOT / "recipes" / "qwen3-8b" / name).read_text(encoding="utf-8"))
        assert recipe.get(key) == yaml.safe_load(value), (
            f"README says {key}: {value} for {name}; the recipe has {recipe.get(key)!r}"
        )


def test_a_stale_attention_claim_is_caught():
    stale = README.read_text(encoding="utf-8").replace("`flash_attn: sdpa`", "`flash_attn: fa2`")
    (name, key, value) = next(item for item in recipe_values_named(stale) if item[1] == "flash_attn")
    recipe = yaml.safe_load((ROOT / "recipes" / "qwen3-8b" / name).read_text(encoding="utf-8"))
    assert recipe[key] != yaml.safe_load(value)
