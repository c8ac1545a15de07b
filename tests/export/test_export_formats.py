"""The export format registry: every target's formats are registered, and each names a runtime
backend that exists (the one `ponder verify` and `Engine` run its files with)."""

from __future__ import annotations

import pytest

from ponder import ConfigError
from ponder.export._bundle import _targets
from ponder.export._formats.registry import FORMATS
from ponder.runtime._backends.base import BACKENDS, OnnxRuntimeBackend
from ponder.runtime._backends.executorch import ExecuTorchBackend


def test_every_target_writes_registered_formats():
    for target in ("xnnpack", "portable", "onnx", "all"):
        assert all(name in FORMATS for name in _targets(target)), target
    assert FORMATS.names() == ["onnx", "pte"]


def test_each_format_names_the_runtime_backend_that_runs_it():
    assert BACKENDS.get(FORMATS.get("pte").backend)() is ExecuTorchBackend
    assert BACKENDS.get(FORMATS.get("onnx").backend)() is OnnxRuntimeBackend
    assert FORMATS.get("pte").consumes_programs and not FORMATS.get("onnx").consumes_programs


def test_an_unknown_format_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown export format 'tflite'; known: onnx, pte"):
        FORMATS.get("tflite")
