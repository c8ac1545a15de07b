"""The traceable MoE backend: same result as the reference, and torch.export keeps the skipping."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from ponder.kernels import moe_ffn, moe_reference, moe_traceable


def _case(T, E, D, H, *, density, gated=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    mask = torch.rand(T, E, generator=g) < density
    w1, w2 = torch.randn(E, D, H, generator=g) / D**0.5, torch.randn(E, H, D, generator=g) / H**0.5
    b1, b2 = torch.randn(E, H, generator=g), torch.randn(D, generator=g)
    w_up = torch.randn(E, D, H, generator=g) / D**0.5 if gated else None
    return x, mask, dict(w1=w1, w2=w2, b1=b1, b2=b2, w_up=w_up)


@pytest.mark.parametrize(
    ("T", "E", "D", "H", "density", "gated"),
    [
        (1, 4, 8, 3, 0.5, False),
        (7, 5, 13, 6, 0.0, False),
        (9, 3, 10, 4, 1.0, True),
        (33, 6, 17, 5, 0.3, True),
    ],
    ids=["one-token", "no-expert", "all-experts-gated", "odd-sizes-gated"],
)
def test_matches_reference(T, E, D, H, density, gated):
    x, mask, w = _case(T, E, D, H, density=density, gated=gated)
    want = moe_reference(
        x, mask, w["w1"], w["w2"], b1=w["b1"], b2=w["b2"], w_up=w["w_up"], activation="silu"
    )
    got = moe_ffn(
        x,
        mask,
        w["w1"],
        w["w2"],
        b1=w["b1"],
        b2=w["b2"],
        w_up=w["w_up"],
        activation="silu",
        backend="traceable",
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # float32 sums in another order


class _Layer(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x, mask):
        return moe_traceable(x, mask, self.w["w1"], self.w["w2"], b1=self.w["b1"], b2=self.w["b2"])


def test_export_keeps_the_loop_and_follows_the_mask():
    """One program, traced once, is right for masks it never saw (the sizes are not baked in)."""
    x, mask, w = _case(12, 4, 8, 5, density=0.5)
    t = Dim("tokens", min=1, max=64)
    program = torch.export.export(
        _Layer(w), (x, mask), dynamic_shapes=({0: t}, {0: t}), strict=False
    )
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("nonzero" in op for op in ops) and any("index_add" in op for op in ops)
    for density, T in ((0.0, 3), (0.2, 40), (1.0, 5)):
        x2, mask2, _ = _case(T, 4, 8, 5, density=density, seed=T)
        want = moe_reference(x2, mask2, w["w1"], w["w2"], b1=w["b1"], b2=w["b2"])
        torch.testing.assert_close(program.module()(x2, mask2), want, rtol=1e-5, atol=1e-5)
