"""ONNX: one file per stage from the same exported graph (dynamo exporter, dynamic batch), and a
runner over ONNX Runtime sessions."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._core.errors import BundleError, MissingDependencyError
from ponder.export._stages.plan import Stage
from ponder.runtime._backends.base import session_options

__all__ = ["OnnxRunner", "write_onnx_stage"]

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


class OnnxRunner:
    """One ONNX Runtime session per stage file, CPU execution provider."""

    def __init__(self, paths: list[str | Path], threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependencyError("onnxruntime", "onnx", "running ONNX stages") from e
        self.sessions = []
        for path in paths:
            try:
                self.sessions.append(
                    ort.InferenceSession(
                        str(path), session_options(threads), providers=["CPUExecutionProvider"]
                    )
                )
            except Exception as e:  # ORT raises its own exception types for bad files
                raise BundleError(
                    f"ONNX Runtime cannot load {path}: {e}; re-export the bundle"
                ) from e

    def run_stage(
        self, index: int, feeds: dict[str, Any], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Stage `index` on named inputs (arrays or tensors) -> named outputs as arrays; the
        same call as `PteRunner.run_stage` (the session knows its output names)."""
        return self.run(index, {k: np.asarray(v) for k, v in feeds.items()})

    def run(self, stage: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[stage]
        names = [o.name for o in session.get_outputs()]
        feed = {i.name: inputs[i.name] for i in session.get_inputs()}
        return dict(zip(names, session.run(names, feed), strict=True))
