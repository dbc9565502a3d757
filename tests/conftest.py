"""Fixtures and the test environment; the shared helpers are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder: data/ for outputs and dataset_info.json beside it."""
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.fixture(autouse=True)
def _lf_marker_is_accurate(request):
    """A test that first imports LLaMA-Factory in this process must be marked `lf` (`-m "not lf"` then selects
    the tests that never load it); tests that start it in a subprocess are marked by hand."""
    import sys

    before = "llamafactory" in sys.modules
    yield
    if not before and "llamafactory" in sys.modules and request.node.get_closest_marker("lf") is None:
        pytest.fail(f"{request.node.nodeid} imports LLaMA-Factory: mark it @pytest.mark.lf", pytrace=False)
