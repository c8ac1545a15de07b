"""How much int8 changes a bundle: per-exit accuracy of the fp32 and int8 files of one format
on held-out labelled data, and the size of every stage output's error, with the stages chained
as on the device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ponder.export._stages.plan import StageIO, run_chain
from ponder.export._stages.trace import MAX_BATCH

__all__ = ["int8_accuracy"]


def _outputs(
    backend: Any, io: StageIO, inputs: dict[str, torch.Tensor], batch: int
) -> dict[str, np.ndarray]:
    """`run_chain` over all rows of `inputs`, `batch` rows at a time, concatenated."""
    rows = len(next(iter(inputs.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, rows, batch):
        chunk = {k: v[start : start + batch].numpy() for k, v in inputs.items()}
        for name, value in run_chain(backend, io, chunk).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def int8_accuracy(
    io: StageIO,
    fp32: Any,
    int8: Any,
    x: torch.Tensor | dict[str, torch.Tensor],
    y: torch.Tensor,
    batch: int = MAX_BATCH,
) -> dict[str, Any]:
    """Per-exit accuracy of the fp32 and the int8 files of one format (two runtime backends,
    both `ExecuTorchBackend` or both `OnnxRuntimeBackend`) on held-out (x, y), and the
    |int8 - fp32| of every stage output.

    io: per stage (input names, output names), as `plan_io` or the manifest give them. Exit k
    predicts the argmax of `exit_logp_k`, the last stage the argmax of `logits`. The stages run
    chained, `batch` rows at a time. The result is plain JSON: {"samples", "exits": [{"output",
    "fp32", "int8", "change", "agreement"}], "errors": [{"stage", "output", "max_abs",
    "mean_abs", "max_abs_fp32"}]}."""
    inputs = x if isinstance(x, dict) else {"x": x}
    out = {"fp32": _outputs(fp32, io, inputs, batch), "int8": _outputs(int8, io, inputs, batch)}
    labels = y.numpy()
    exits = [n for _, names in io for n in names if n.startswith("exit_logp_") or n == "logits"]
    rows = []
    for name in exits:
        pred = {key: out[key][name].argmax(-1) for key in out}
        acc = {key: float((p == labels).mean()) for key, p in pred.items()}
        rows.append(
            {
                "output": name,
                "fp32": acc["fp32"],
                "int8": acc["int8"],
                "change": acc["int8"] - acc["fp32"],
                "agreement": float((pred["fp32"] == pred["int8"]).mean()),
            }
        )
    errors = []
    for i, (_, names) in enumerate(io):
        for name in names:
            ref = out["fp32"][name].astype(np.float64)
            diff = np.abs(out["int8"][name] - ref)
            errors.append(
                {
                    "stage": i,
                    "output": name,
                    "max_abs": float(diff.max()),
                    "mean_abs": float(diff.mean()),
                    "max_abs_fp32": float(np.abs(ref).max()),
                }
            )
    return {"samples": len(labels), "exits": rows, "errors": errors}
