"""The generator's output in a scratch project, shared by the generator's and the rules' tests."""

import shutil

import pytest

from caretune.recipe_folders import generator
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """What `caretune recipes` writes, in a scratch project with this repository's dataset_info.json."""
    root = tmp_path_factory.mktemp("generated")
    written, kept = generator.write_recipes(root)
    assert kept == [] and len(written) == len(generator.generated_files())
    shutil.copy(ROOT / "dataset_info.json", root / "dataset_info.json")
    return root
