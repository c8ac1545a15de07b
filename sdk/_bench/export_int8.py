"""int8 copies of the staged bundle for `ponder bench export`, through ponder.export's
quantizer (pt2e + XNNPACK for the .pte, ONNX Runtime static QDQ for the ONNX files), when the
Calibrated on random images: only the latency means anything here."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ponder.runtime._bundle.layout import ONNX_DIR, PTE, onnx_file, stage_method

__all__ = ["int8_bundle"]

MARK = "bench_export.json"  # the config an int8 folder was written with (for --reuse)


def int8_bundle(
    model: torch.nn.Module,
    staged: Path,
    folder: Path,
    key: dict[str, Any],
    *,
    image: int,
    reuse: bool,
    echo: Callable[[str], None],
) -> Path:
    """Write `folder`/model.pte and `folder`/onnx/stage_<i>.onnx, int8, laid out like the fp32
    bundle `staged` (same methods, names and files)."""
    from ponder.export._int8.quantize import (
        calibration_feeds,
        quantize_stages_onnx,
        quantize_stages_pte,
        stage_calibration_inputs,
    )
    from ponder.export._stages.plan import plan_stages

    mark = folder / MARK
    if reuse and mark.exists() and json.loads(mark.read_text()) == key:
        echo(f"reusing {folder}")
        return folder
    echo(f"quantizing the staged bundle to int8 in {folder} (4 random calibration batches)")
    started = time.perf_counter()
    plan = plan_stages(model)
    generator = torch.Generator().manual_seed(2)
    batches = [{"x": torch.randn(4, 3, image, image, generator=generator)} for _ in range(4)]
    runs = stage_calibration_inputs(plan, batches)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_id": "bench-export-staged-int8",
        "quantization": "int8",
        "methods": [stage_method(i) for i in range(len(plan.stages))],
    }
    with warnings.catch_warnings():
        # pytree deprecation inside torch/executorch, once per pickled spec; not ours to fix
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        quantize_stages_pte(plan, runs, folder / PTE, metadata=meta)
    echo(f"  {PTE}: int8, lowered to XNNPACK ({time.perf_counter() - started:.0f} s)")
    fp32 = [staged / onnx_file(i) for i in range(len(plan.stages))]
    with _root_log_level(logging.ERROR):
        # onnxruntime.quantization logs advice (pre-processing; per-channel axes of LayerNorm
        # weights, which it then quantizes per tensor) on the root logger, once per file
        quantize_stages_onnx(fp32, folder / ONNX_DIR, calibration_feeds(plan, runs))
    echo(f"  onnx: {len(fp32)} int8 stage files ({time.perf_counter() - started:.0f} s in all)")
    mark.write_text(json.dumps(key) + "\n")
    return folder


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)
