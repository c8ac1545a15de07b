"""Compare what an exported stage computes with what the eager stage computed, per output
(numpy only: the export writer and `ponder verify` on a torch-free device share it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ponder._core.errors import ExportMismatchError

__all__ = ["TOLERANCES", "Comparison", "check_comparisons", "compare_outputs"]

# Allowed |exported - eager| <= atol + rtol * max|eager|, per output tensor. fp32: XNNPACK and
# ONNX Runtime reorder sums (and XNNPACK folds BatchNorm into convolutions), so results differ
# from eager by a few float32 ulps of the largest value; measured here on the digits CNN stages,
# the largest difference was 8e-6 on log-probs of magnitude ~10.
# int8: (max error - atol) / max|eager| reached 0.23 on a hidden state of the demo digits CNN
# (1,438 images; an outlier clipped by the .pte's activation observer), 0.09 for ONNX; mean
# errors stayed under 0.7% of max|eager|. A max-error bound this loose only catches gross
# breakage; the per-exit accuracy and agreement on held-out data are the int8 check that
# matters, and the export reports them.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-4},
    "int8": {"atol": 0.05, "rtol": 0.3},
}


@dataclass(frozen=True)
class Comparison:
    format: str  # "pte" or "onnx"
    stage: int
    output: str
    max_abs_error: float
    max_abs_reference: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.allowed

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "stage": self.stage,
            "output": self.output,
            "max_abs_error": self.max_abs_error,
            "max_abs_reference": self.max_abs_reference,
            "allowed": self.allowed,
            "ok": self.ok,
        }


def compare_outputs(
    fmt: str,
    stage: int,
    got: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    precision: str = "fp32",
) -> list[Comparison]:
    """One `Comparison` per expected output of `stage` (a missing or misshaped output fails)."""
    tol = TOLERANCES[precision]
    rows = []
    for name, ref in expected.items():
        if name not in got:
            raise ExportMismatchError(
                f"{fmt} stage {stage} did not return output {name!r} (it returned {sorted(got)})"
            )
        out = np.asarray(got[name], dtype=np.float64)
        if out.shape != ref.shape:
            raise ExportMismatchError(
                f"{fmt} stage {stage} output {name!r} has shape {out.shape}, eager {ref.shape}"
            )
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        error = float(np.abs(out - ref).max()) if ref.size else 0.0
        allowed = tol["atol"] + tol["rtol"] * scale
        rows.append(Comparison(fmt, stage, name, error, scale, allowed))
    return rows


def check_comparisons(rows: list[Comparison]) -> None:
    """Raise ExportMismatchError naming every stage/output outside its tolerance."""
    bad = [r for r in rows if not r.ok]
    if bad:
        lines = "; ".join(
            f"{r.format} stage {r.stage} output {r.output!r}: max |error| {r.max_abs_error:.3g} "
            f"> allowed {r.allowed:.3g}"
            for r in bad
        )
        raise ExportMismatchError(
            f"the exported model does not compute what the eager model computes: {lines}. "
            "This usually means an operator is lowered differently; try --target portable or "
            "--target onnx, and report the model if it persists"
        )
