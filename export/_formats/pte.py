"""ExecuTorch: every stage as one method of a single `.pte` program, lowered to XNNPACK (or left
on the portable kernels); the runtime's `ExecuTorchBackend` runs it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ponder._core.errors import MissingDependencyError
from ponder.export._stages.trace import portable_conv_shapes
from ponder.runtime._backends.executorch import METADATA_METHOD, quiet_imports
from ponder.runtime._bundle.layout import stage_method

__all__ = ["METADATA_METHOD", "executorch_exporter", "write_pte"]


def executorch_exporter():
    """(exir, XnnpackPartitioner), imported quietly, or a MissingDependencyError saying what to install."""
    try:
        with quiet_imports():
            from executorch import exir
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
    except ImportError as e:
        raise MissingDependencyError("executorch", "export", "ExecuTorch (.pte) export") from e
    return exir, XnnpackPartitioner


def write_pte(
    programs: list[torch.export.ExportedProgram],
    path: Path,
    *,
    delegate: str = "xnnpack",
    metadata: dict[str, Any],
    methods: list[str] | None = None,
) -> Path:
    """One program with method `stage_<i>` (or methods[i]) for programs[i] (`export_stage`);
    weights are stored once because each stage owns its own parameters. `delegate`:
    "xnnpack" or "portable"."""
    names = methods or [stage_method(i) for i in range(len(programs))]
    exir, XnnpackPartitioner = executorch_exporter()
    partitioner = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    with portable_conv_shapes(), warnings.catch_warnings():
        # torch's pytree warns about a deprecated LeafSpec check inside executorch's passes
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        edge = exir.to_edge_transform_and_lower(
            dict(zip(names, programs, strict=True)),
            partitioner=partitioner,
            constant_methods={METADATA_METHOD: json.dumps(metadata, sort_keys=True)},
        )
        path.write_bytes(edge.to_executorch().buffer)
    return path
