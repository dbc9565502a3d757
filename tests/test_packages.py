"""pyproject.toml is the one list of packages: training's, the GPU kit's and a manifest's come from it."""

import tomllib

from packaging.requirements import Requirement

from caretune.packages import NOT_FOR_TRAINING, canonical, training_packages, training_versions
from tests.helpers import ROOT

DECLARED = [
    canonical(Requirement(line).name)
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
]


def test_training_needs_every_declared_package_but_those_named_with_a_reason():
    assert set(NOT_FOR_TRAINING) <= set(DECLARED)  # no reason kept for a package no longer declared
    assert list(training_packages()) == [name for name in DECLARED if name not in NOT_FOR_TRAINING]
    assert {"llamafactory", "deepspeed", "torch"} <= set(training_packages())


def test_a_manifest_records_the_training_closure_and_not_what_only_caretune_eval_or_judge_use():
    versions = training_versions()
    assert all(versions[name] for name in ("caretune", "torch", "llamafactory", "transformers", "peft", "deepspeed"))
    assert "openai" not in versions and "rouge-chinese" not in versions
    assert "flash-attn" in versions  # recorded as None where it is not installed


def test_a_checkout_on_pythonpath_reads_the_list_from_pyproject(monkeypatch):
    """The offline GPU kit runs caretune from a checkout through PYTHONPATH: no installed metadata for caretune."""
    from importlib.metadata import PackageNotFoundError

    from caretune import __version__, packages

    installed = packages.training_packages()
    real = packages.distribution

    def without_caretune(name):
        if name == "caretune":
            raise PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(packages, "distribution", without_caretune)
    assert packages.training_packages() == installed
    assert [r.name for r in packages.requirements("caretune", packages.GPU_EXTRA)] == ["liger-kernel"]
    assert packages.training_versions()["caretune"] == __version__
