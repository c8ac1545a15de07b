"""The int8 half of a bundle: quantized program and ONNX files next to the fp32 ones, checked
against eager on the samples and compared with fp32 per exit on held-out data."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ponder._core.errors import ConfigError
from ponder.export._int8.accuracy import int8_accuracy
from ponder.export._int8.quantize import (
    calibration_feeds,
    quantize_stages_onnx,
    quantize_stages_pte,
    stage_calibration_inputs,
)
from ponder.export._stages.plan import StageIO, StagePlan
from ponder.export._validate import (
    TOLERANCES,
    Comparison,
    check_onnx,
    check_pte,
    onnx_backend,
    pte_backend,
    torch_threads_kept,
)
from ponder.runtime._bundle.layout import INT8_ONNX_DIR, INT8_PTE, PTE, int8_onnx

__all__ = ["check_int8", "write_int8"]

Inputs = dict[str, torch.Tensor]


def write_int8(
    plan: StagePlan,
    out: Path,
    targets: dict[str, str],
    onnx_files: list[str],
    calibration: list[Inputs] | None,
    held_out: tuple[Inputs, torch.Tensor] | None,
    metadata: dict[str, Any],
    echo: Callable[[str], None],
) -> tuple[list[str], dict[str, Any]]:
    """Quantize every stage, write the int8 files of each target; returns (files written, the
    manifest's `quantization` section). `check_int8` then runs them against eager."""
    if not calibration or next(iter(calibration[0].values())).shape[0] < 2:
        raise ConfigError(
            "int8 export needs calibration data (a list of input batches, the first of >= 2 "
            "rows); from the CLI: --calib-data NAME, or a checkpoint that recorded its data set"
        )
    started = time.perf_counter()
    runs = stage_calibration_inputs(plan, calibration)
    files: list[str] = []
    section: dict[str, Any] = {
        "scheme": "int8",
        "tolerance": TOLERANCES["int8"],
        "calibration_batches": len(calibration),
        "kept_fp32": "exit heads (pooling, norm, head, ensemble) and MoE layers",
    }
    if "pte" in targets:
        quantize_stages_pte(plan, runs, out / INT8_PTE, metadata={**metadata, "precision": "int8"})
        files.append(INT8_PTE)
        section["pte"] = INT8_PTE
    if "onnx" in targets:
        quantize_stages_onnx(
            [out / f for f in onnx_files], out / INT8_ONNX_DIR, calibration_feeds(plan, runs)
        )
        files += [int8_onnx(INT8_ONNX_DIR, f) for f in onnx_files]
        section["onnx_dir"] = INT8_ONNX_DIR
    echo(
        f"  int8: {', '.join(files)} ({time.perf_counter() - started:.1f} s, calibrated on "
        f"{sum(next(iter(b.values())).shape[0] for b in calibration)} samples)"
    )
    if held_out is not None:
        section["accuracy"] = _accuracy(plan, out, section, onnx_files, held_out)
    return files, section


def check_int8(
    out: Path, section: dict[str, Any], onnx_files: list[str], io: StageIO, runs: list[dict]
) -> list[Comparison]:
    """The int8 files that `section` names, each stage on its stored eager inputs, against eager
    at the int8 tolerance (the fp32 check with another tolerance)."""
    rows = []
    if "pte" in section:
        rows += check_pte(out / section["pte"], io, runs, "int8")
    if "onnx_dir" in section:
        paths = [out / int8_onnx(section["onnx_dir"], f) for f in onnx_files]
        rows += check_onnx(paths, io, runs, "int8")
    return rows


def _accuracy(
    plan: StagePlan,
    out: Path,
    section: dict[str, Any],
    onnx_files: list[str],
    held_out: tuple[Inputs, torch.Tensor],
) -> dict[str, Any]:
    """Per format: every exit's accuracy in fp32 and int8 on the held-out data."""
    io = [(s.inputs, s.outputs) for s in plan.stages]
    x, y = held_out
    result = {}
    if "pte" in section:
        with torch_threads_kept():
            fp32, int8 = pte_backend(out / PTE, io), pte_backend(out / INT8_PTE, io, "int8")
            result["pte"] = int8_accuracy(io, fp32, int8, x, y)
    if "onnx_dir" in section:
        fp32 = onnx_backend([out / f for f in onnx_files])
        int8 = onnx_backend([out / int8_onnx(INT8_ONNX_DIR, f) for f in onnx_files], "int8")
        result["onnx"] = int8_accuracy(io, fp32, int8, x, y)
    return result
