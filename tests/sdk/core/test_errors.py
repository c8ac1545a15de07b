"""Missing optional packages: every message names a pip command that installs what is missing
(torch's installs torch itself first: no extra does), here for the SDK's own import sites."""

from __future__ import annotations

import importlib.metadata
import re
import sys

import pytest
from torch import nn

import ponder
from ponder import MissingDependencyError
from ponder._bench.moe_export_programs import _require
from ponder.data import datasets as data

TORCH_CPU = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import m` (and `from m import x`) fail for each module, as if not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_an_extra_is_installed_with_its_pip_command():
    error = MissingDependencyError("onnxruntime", "onnx", "Running ONNX stages")
    assert isinstance(error, ImportError) and isinstance(error, ponder.PonderError)
    assert str(error) == (
        "Running ONNX stages needs the optional package 'onnxruntime', which is not installed. "
        "Install it with: pip install 'ponder[onnx]'"
    )


def test_torch_is_installed_first_because_no_extra_installs_it():
    message = str(MissingDependencyError("torch", "train", "the torch backend"))
    # the CPU build the Makefile pins, then the extra: `pip install 'ponder[train]'` alone would
    # leave torch missing (pyproject.toml lists no torch anywhere)
    assert re.search(
        rf"Install it with: {re.escape(TORCH_CPU)} .*, then pip install 'ponder\[train\]'$",
        message,
    ), message


def test_digits_need_scikit_learn(monkeypatch):
    _without(monkeypatch, "sklearn", "sklearn.datasets")
    with pytest.raises(
        MissingDependencyError, match=r"'scikit-learn'.*pip install 'ponder\[train\]'"
    ):
        data.load_digits()


def test_mnist1d_version_lookup_names_the_extra(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(MissingDependencyError, match=r"'mnist1d'.*pip install 'ponder\[train\]'"):
        data.load_mnist1d(num_samples=100)


def test_saving_a_checkpoint_needs_safetensors(monkeypatch, tmp_path):
    _without(monkeypatch, "safetensors", "safetensors.torch")
    with pytest.raises(
        MissingDependencyError, match=r"Saving checkpoints.*'safetensors'.*ponder\[train\]"
    ):
        ponder.save(nn.Linear(2, 2), tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "weights.safetensors").exists()


@pytest.mark.parametrize(
    ("backend", "module", "extra"),
    [
        ("onnx", "onnxscript", "onnx"),
        ("onnx", "onnxruntime", "onnx"),
        ("pte", "executorch", "export"),
    ],
)
def test_moe_export_benchmark_checks_its_packages_first(monkeypatch, backend, module, extra):
    _without(monkeypatch, module)
    with pytest.raises(
        MissingDependencyError,
        match=rf"{backend} MoE-export benchmark.*'{module}'.*pip install 'ponder\[{extra}\]'",
    ):
        _require((backend,))
