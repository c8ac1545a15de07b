"""The export formats by name: each writes its files into a bundle folder and names the runtime
backend that checks them against eager (the backend `Engine` runs them with)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder._core.registry import Registry
from ponder.export._formats.onnx import write_onnx_stage
from ponder.export._formats.pte import write_pte
from ponder.export._stages.plan import StageIO, StagePlan
from ponder.export._validate import Comparison, check_onnx, check_pte
from ponder.runtime._bundle.layout import PTE, onnx_file

__all__ = ["FORMATS", "Format"]

# (plan, programs, bundle folder, target option, program metadata, echo) -> files written,
# relative to the folder
Write = Callable[
    [StagePlan, list[Any], Path, str, dict[str, Any], Callable[[str], None]], list[str]
]
# (files written, as paths, per stage (inputs, outputs), eager runs, precision) -> comparisons
Check = Callable[[list[Path], StageIO, list[dict], str], list[Comparison]]


@dataclass(frozen=True)
class Format:
    """`name` labels the format in the validation report; `backend` is the runtime backend that
    runs its files; `consumes_programs`: writing changes the torch.export programs it is given
    (seen: the ONNX export of an MoE stage then failed on unbacked symbols), so a format
    written after it traces programs of its own."""

    name: str
    backend: str
    consumes_programs: bool
    write: Write
    check: Check


FORMATS: Registry[Format] = Registry("export format")


def _write_pte(plan, programs, out, delegate, metadata, echo) -> list[str]:
    """One program, a method per stage, lowered to `delegate` ("xnnpack" or "portable")."""
    started = time.perf_counter()
    write_pte(programs, out / PTE, delegate=delegate, metadata=metadata)
    seconds, mb = time.perf_counter() - started, (out / PTE).stat().st_size / 1e6
    echo(
        f"  {PTE}: {len(plan.stages)} methods lowered to {delegate} ({seconds:.1f} s, {mb:.2f} MB)"
    )
    return [PTE]


def _write_onnx(plan, programs, out, option, metadata, echo) -> list[str]:
    """One ONNX file per stage (CPU is the only option; the program metadata is the manifest's)."""
    files = []
    for i, (stage, program) in enumerate(zip(plan.stages, programs, strict=True)):
        started = time.perf_counter()
        files.append(onnx_file(i))
        write_onnx_stage(stage, program, out / files[-1])
        echo(f"  {files[-1]}: written ({time.perf_counter() - started:.1f} s)")
    return files


def _check_pte(
    paths: list[Path], io: StageIO, runs: list[dict], precision: str
) -> list[Comparison]:
    [path] = paths
    return check_pte(path, io, runs, precision)


FORMATS.register("pte")(Format("pte", "executorch", True, _write_pte, _check_pte))
FORMATS.register("onnx")(Format("onnx", "onnxruntime", False, _write_onnx, check_onnx))
