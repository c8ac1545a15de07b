"""ONNX: one file per stage from the same exported graph (dynamo exporter, dynamic batch); the
runtime's `OnnxRuntimeBackend` runs them."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ponder._core.errors import MissingDependencyError
from ponder.export._stages.plan import Stage

__all__ = ["OPSET", "write_onnx_stage"]

OPSET = 18


def write_onnx_stage(stage: Stage, program: torch.export.ExportedProgram, path: Path) -> Path:
    """Write `program` (stage `stage`, traced with a dynamic batch) as one ONNX model."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        raise MissingDependencyError("onnxscript", "onnx", "ONNX export") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    # the exporter warns about its own internals and about torchvision ops it cannot register
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                input_names=stage.inputs,
                output_names=stage.outputs,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        registration.setLevel(level)
    onnx_program.save(str(path))
    return path
