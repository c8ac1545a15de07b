"""Exported files against eager: each stage run by the runtime backend that runs it on the
device, on its stored eager inputs, every output compared within the format's tolerance."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder.export._stages.plan import StageIO
from ponder.runtime._backends.base import Backend, OnnxRuntimeBackend
from ponder.runtime._backends.executorch import ExecuTorchBackend
from ponder.runtime._bundle.compare import (
    TOLERANCES,
    Comparison,
    check_comparisons,
    compare_outputs,
)

__all__ = [
    "TOLERANCES",
    "Comparison",
    "check_comparisons",
    "check_onnx",
    "check_pte",
    "compare_outputs",
    "onnx_backend",
    "pte_backend",
    "torch_threads_kept",
]

# ONNX files are checked on the CPU provider: the fp32 tolerance was set on it, and GPU
# providers may compute in TF32.
CPU = ["CPUExecutionProvider"]


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """The ExecuTorch backend sets torch to one thread, as on the device; the exporting process
    gets its own thread count back afterwards."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pte_backend(path: Path, io: StageIO, precision: str = "fp32") -> ExecuTorchBackend:
    """The program at `path` on the runtime's ExecuTorch backend (call under
    `torch_threads_kept`); io: per stage (input names, output names)."""
    return ExecuTorchBackend.from_file(path, [outputs for _, outputs in io], precision=precision)


def onnx_backend(paths: list[Path], precision: str = "fp32") -> OnnxRuntimeBackend:
    """The stage files on the runtime's ONNX Runtime backend, CPU provider."""
    return OnnxRuntimeBackend.from_files(paths, providers=CPU, precision=precision)


def check_pte(
    path: Path, io: StageIO, runs: list[dict], precision: str = "fp32"
) -> list[Comparison]:
    """Execute every method of the program on the stored stage inputs; compare with eager."""
    with torch_threads_kept():
        return _compare(pte_backend(path, io, precision), "pte", runs, precision)


def check_onnx(
    paths: list[Path], io: StageIO, runs: list[dict], precision: str = "fp32"
) -> list[Comparison]:
    """Run every ONNX stage on the stored stage inputs; compare with eager."""
    return _compare(onnx_backend(paths, precision), "onnx", runs, precision)


def _compare(backend: Backend, fmt: str, runs: list[dict], precision: str) -> list[Comparison]:
    """Each stage on its own stored inputs (not chained), every output against eager's."""
    fmt = fmt if precision == "fp32" else f"{fmt}-{precision}"
    rows = []
    for i, run in enumerate(runs):
        feeds = {k: backend.from_numpy(v) for k, v in numpy_arrays(run["inputs"]).items()}
        got = {k: backend.to_numpy(v) for k, v in backend.run_stage(i, feeds).items()}
        rows += compare_outputs(fmt, i, got, numpy_arrays(run["outputs"]), precision)
    return rows


def numpy_arrays(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """Tensors (or arrays) by name as numpy arrays."""
    return {
        k: v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        for k, v in tensors.items()
    }
