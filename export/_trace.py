"""torch.export of one stage with a dynamic batch dimension, shared by the ExecuTorch and ONNX
writers so that both formats trace the same graph."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch.export import Dim

from ponder._errors import UnsupportedModelError

from ._stages import Stage

__all__ = ["MAX_BATCH", "batch_dim", "export_stage", "portable_conv_shapes"]

# Largest batch a stage accepts. ExecuTorch plans activation memory for the upper bound, so
# this is a memory/size trade-off, not a speed one.
MAX_BATCH = 256


def batch_dim() -> Dim:
    return Dim("batch", min=1, max=MAX_BATCH)


@contextlib.contextmanager
def portable_conv_shapes() -> Iterator[None]:
    """Keep convolutions from narrowing the dynamic batch while tracing and lowering.

    Shape propagation asks which CPU convolution backend eager PyTorch would pick, and that
    choice (mkldnn, nnpack) depends on whether the batch is below 16: the batch range became
    [2, 15] and ExecuTorch planned memory for 15 rows (measured here with executorch 1.5.1 on a
    Conv2d and a Conv1d, XNNPACK and portable alike; a batch of 64 then failed to load).
    """
    with warnings.catch_warnings():
        # toggling the mkldnn flags warns about TF32 on Intel GPUs, which does not apply here
        warnings.filterwarnings("ignore", message="TF32 acceleration", category=UserWarning)
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
            yield


def export_stage(stage: Stage, example: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export.export of `stage.module` on `example`, batch dimension dynamic."""
    batch = batch_dim()
    shapes = tuple({0: batch} for _ in example)
    try:
        with torch.no_grad(), portable_conv_shapes(), warnings.catch_warnings():
            # MoEFFN.last_mask (experts used, for cost counting) is eager-only bookkeeping
            warnings.filterwarnings("ignore", message=r"The tensor attribute .*last_mask")
            return torch.export.export(stage.module, example, dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch.export raises many types; say which stage and why
        raise UnsupportedModelError(
            f"torch.export could not trace stage with inputs {stage.inputs}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
