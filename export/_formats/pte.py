"""ExecuTorch: every stage as one method of a single `.pte` program, lowered to XNNPACK (or left
on the portable kernels), and a runner that executes the methods with the ExecuTorch runtime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._core.errors import BundleError, MissingDependencyError
from ponder.export._stages.trace import portable_conv_shapes
from ponder.runtime._backends.executorch import METADATA_METHOD, quiet_imports

__all__ = ["METADATA_METHOD", "PteRunner", "write_pte"]


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
) -> Path:
    """One program with method `stage_<i>` for programs[i] (`export_stage`); weights are stored
    once because each stage owns its own parameters. `delegate`: "xnnpack" or "portable"."""
    exir, XnnpackPartitioner = executorch_exporter()
    partitioner = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    with portable_conv_shapes(), warnings.catch_warnings():
        # torch's pytree warns about a deprecated LeafSpec check inside executorch's passes
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        edge = exir.to_edge_transform_and_lower(
            {f"stage_{i}": p for i, p in enumerate(programs)},
            partitioner=partitioner,
            constant_methods={METADATA_METHOD: json.dumps(metadata, sort_keys=True)},
        )
        path.write_bytes(edge.to_executorch().buffer)
    return path


class PteRunner:
    """Loads a `.pte` with the ExecuTorch runtime and executes its stage methods."""

    def __init__(self, path: str | Path):
        try:
            with quiet_imports():
                from executorch.runtime import Runtime
        except ImportError as e:
            raise MissingDependencyError("executorch", "export", "running .pte programs") from e
        try:
            self.program = Runtime.get().load_program(Path(path))
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"ExecuTorch cannot load {path}: {e}; re-export the bundle") from e
        self._methods: dict[str, Any] = {}

    @property
    def method_names(self) -> set[str]:
        return set(self.program.method_names)

    def metadata(self) -> dict[str, Any]:
        return json.loads(self.run(METADATA_METHOD, [])[0])

    def run_stage(
        self, index: int, feeds: dict[str, Any], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Method `stage_<index>` on named inputs (arrays or tensors, in call order) -> named
        outputs as arrays; the same call as `OnnxRunner.run_stage`."""
        args = [torch.as_tensor(v) for v in feeds.values()]
        got = self.run(f"stage_{index}", args)
        return dict(zip(outputs, (t.numpy() for t in got), strict=True))

    def run(self, method: str, inputs: list[Any]) -> list[Any]:
        if method not in self._methods:
            if method not in self.method_names:
                raise BundleError(
                    f"the program has no method {method!r}; it has {sorted(self.method_names)}"
                )
            self._methods[method] = self.program.load_method(method)
        return list(self._methods[method].execute(inputs))
