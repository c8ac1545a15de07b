"""Backends whose package is missing say what to install: the torch backend names a command
that installs torch itself (no extra does), the executorch backend its extra."""

from __future__ import annotations

import sys

import pytest

from ponder import MissingDependencyError
from ponder.runtime._backends.eager import TorchBackend
from ponder.runtime._backends.executorch import ExecuTorchBackend


def test_torch_backend_without_torch_installs_torch_first(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    with pytest.raises(MissingDependencyError, match=r"the torch backend needs .*'torch'") as info:
        TorchBackend(bundle=None)  # the import comes first: no bundle is read
    message = str(info.value)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in message
    assert message.endswith("then pip install 'ponder[train]'"), message


def test_executorch_backend_without_executorch_names_the_export_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    with pytest.raises(
        MissingDependencyError, match=r"'executorch'.*pip install 'ponder\[export\]'"
    ):
        ExecuTorchBackend(bundle=None)
