"""Traceable grouped MoE FFN: a per-expert loop in plain tensor ops whose sizes depend on the
data, so that exported programs (ExecuTorch, ONNX) skip the experts a token did not select."""

from __future__ import annotations

import torch

from ._common import check_moe_args, get_activation


def moe_traceable(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    activation: str = "gelu",
) -> torch.Tensor:
    """Same result as `moe_reference`; each expert runs only on the rows that selected it.

    Every step is an op that torch.export traces with a data-dependent size (nonzero ->
    index_select -> matmuls -> index_add): the exported graph keeps the per-expert loop, and
    the runtime's matmuls see only the selected rows. In eager mode use the "cpu" backend,
    which is faster; this one exists for export. `reshape(-1)` rather than `squeeze(1)` after
    nonzero: ExecuTorch 1.5.1 rejected the squeeze of the unbacked-size result at run time
    (dim-order check in squeeze_copy), measured here.
    """
    # T=tokens, D=width, H=expert hidden, E=experts, n=tokens of one expert
    check_moe_args(x, mask, w1, w2, b1, b2, w_up)
    act = get_activation(activation)
    out = x.new_zeros(x.shape, dtype=torch.float32)  # [T, D]
    if b2 is not None:
        out = out + b2.float()
    for e in range(w1.shape[0]):
        rows = mask[:, e].nonzero().reshape(-1)  # [n]
        xe = x.index_select(0, rows)  # [n, D]
        h = xe @ w1[e]  # [n, H]
        if b1 is not None:
            h = h + b1[e]
        h = act(h)
        if w_up is not None:
            h = h * (xe @ w_up[e])
        out = out.index_add(0, rows, (h @ w2[e]).float())  # [n, D] into [T, D]
    return out.to(x.dtype)
