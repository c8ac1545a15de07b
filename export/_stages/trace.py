"""torch.export of one stage with a dynamic batch dimension (and tokens for text), the same way
for the ExecuTorch and ONNX writers, and the stage's shapes with their dynamic dims named."""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator

import torch
from torch.export import Dim

from ponder._core.errors import UnsupportedModelError
from ponder.export._stages.plan import Stage

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_BATCH",
    "TRANSFORMER_MAX_BATCH",
    "batch_dim",
    "export_stage",
    "portable_conv_shapes",
    "symbolic_shapes",
]

# Largest batch a stage accepts. ExecuTorch plans activation memory for the upper bound, so
# this is a memory/size trade-off, not a speed one (the engine splits larger batches).
MAX_BATCH = 256
# Transformers plan for batch x tokens (and attention scores for batch x tokens^2), so they get
# smaller defaults: all-MiniLM-L6-v2 with the bounds of its position table (256 rows x 512
# tokens) planned 13 GB for one ExecuTorch method, measured here. Export options raise them.
TRANSFORMER_MAX_BATCH = 64
DEFAULT_MAX_TOKENS = 128


# Bounds of the dynamic dimensions by name (the lower bound 1 lets a stage run one sample).
DIM_BOUNDS = {"batch": (1, MAX_BATCH), "tokens": (1, 512)}


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


def export_stage(
    stage: Stage,
    example: tuple[torch.Tensor, ...],
    bounds: dict[str, tuple[int, int]] | None = None,
) -> torch.export.ExportedProgram:
    """torch.export.export of `stage.module` on `example`, with the batch dimension (and any
    other the stage declares, such as tokens) dynamic; `bounds` narrows DIM_BOUNDS (a model's
    position table caps its tokens)."""
    limits = {**DIM_BOUNDS, **(bounds or {})}
    dims = {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in limits.items()}
    shapes = tuple(
        {i: dims[d] for i, d in stage.dynamic_dims(name).items()} for name in stage.inputs
    )
    params = inspect.signature(stage.module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        shapes = (shapes,)  # forward(*args): one entry, for the whole tuple
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


def symbolic_shapes(
    program: torch.export.ExportedProgram, stage: Stage
) -> tuple[list[list[int | str]], list[list[int | str]]]:
    """Input and output shapes of a traced stage, dynamic dimensions by name ("batch",
    "tokens"; an expression such as "2*tokens" where the graph computes one)."""
    names: dict[str, str] = {}
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = placeholders[len(placeholders) - len(stage.inputs) :]
    for node, name in zip(user, stage.inputs, strict=True):
        for i, dim in stage.dynamic_dims(name).items():
            names[str(node.meta["val"].shape[i])] = dim

    def shape(node: torch.fx.Node) -> list[int | str]:
        return [
            s if isinstance(s, int) else names.get(str(s), str(s)) for s in node.meta["val"].shape
        ]

    outputs = next(n for n in program.graph.nodes if n.op == "output").args[0]
    return [shape(n) for n in user], [shape(n) for n in outputs]
