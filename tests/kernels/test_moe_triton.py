"""The Triton MoE path against the reference: natively on a CUDA device (`gpu` marker), else on
CPU tensors in triton's interpreter (TRITON_INTERPRET=1, read when the kernels are compiled)."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from moe_weights import random_experts

from ponder._core.errors import ConfigError
from ponder.kernels import list_activations, moe_ffn, moe_reference, moe_triton, select_backend

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = [pytest.mark.gpu] if CUDA else []

pytest.importorskip("triton", reason="needs the kernels extra: pip install 'ponder[kernels]'")
if not CUDA:  # compile the kernels for the interpreter now; each test sets the variable again
    os.environ["TRITON_INTERPRET"], before = "1", os.environ.get("TRITON_INTERPRET")
    importlib.import_module("ponder.kernels._triton_kernels")
    if before is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = before

# Tolerances against the float32 reference, which starts from the same (rounded) inputs.
# Measured in the interpreter over these cases with 5 seeds, outputs up to 4.5 in size:
# float32, the same products summed in another order (tiles, experts): max error 1e-6, hence
# 1e-5 as for the CPU path (float32's default rtol, 1.3e-6, is too tight for reordered sums).
# float16, hidden units and each expert's partial output rounded to float16 before the float32
# sum: max error 0.002, one float16 step at that size; allowed about two steps.
# bfloat16, the same roundings with an 8-bit mantissa: max error 0.03-0.05 (the errors of up to
# 24 experts' partials add up), at most half the tolerance the CPU path's bfloat16 test uses.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 4e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 3e-2, "rtol": 2e-2},
}
DTYPES = list(TOL)


@pytest.fixture(autouse=True)
def _interpreter_and_small_tiles(monkeypatch):
    """Interpreter on where there is no GPU; 16-wide tiles, so that the tiny shapes below
    still run several tiles per expert and several steps of every reduction loop."""
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr("ponder.kernels._triton.MAX_BLOCK", dict.fromkeys("MHDKT", 16))


def _case(T, D, H, E, *, density, gated=False, bias=True, dtype=torch.float32, seed=0):
    """Tokens, mask and stacked-expert weights scaled so that outputs are of order 1."""
    w = random_experts(E, D, H, gated=gated, bias=bias, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    w = {k: None if v is None else v.to(DEVICE, dtype) for k, v in w.items()}
    x = torch.randn(T, D, generator=g).to(DEVICE, dtype)
    return x, (torch.rand(T, E, generator=g) < density).to(DEVICE), w


CASES = {  # T, D, H, E, density, gated
    "one-token": (1, 13, 5, 3, 0.7, False),
    "no-expert": (7, 13, 5, 3, 0.0, False),
    "all-experts-gated": (9, 20, 18, 4, 1.0, True),
    "odd-sizes": (41, 33, 19, 5, 0.4, False),
    "many-experts-gated": (7, 13, 5, 24, 0.3, True),
}


@pytest.mark.parametrize(
    "dtype,merge",
    [(dtype, "ordered") for dtype in DTYPES] + [(torch.float32, "atomic")],
    ids=["float32", "float16", "bfloat16", "float32-atomic"],
)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, dtype, merge):
    T, D, H, E, density, gated = CASES[case]
    x, mask, w = _case(T, D, H, E, density=density, gated=gated, dtype=dtype)
    got = moe_triton(x, mask, **w, merge=merge)
    assert got.dtype == dtype and got.shape == (T, D)
    torch.testing.assert_close(got, moe_reference(x, mask, **w), **TOL[dtype])


@pytest.mark.parametrize("activation", list_activations())
def test_every_activation(activation):
    x, mask, w = _case(9, 13, 5, 4, density=0.5, bias=False)
    got = moe_triton(x, mask, **w, activation=activation)
    want = moe_reference(x, mask, **w, activation=activation)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("merge", ["ordered", "atomic"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_no_expert_selected_gives_the_output_bias(bias, merge):
    x, mask, w = _case(7, 13, 5, 3, density=0.0, bias=bias)
    want = torch.zeros(7, 13, device=DEVICE) if w["b2"] is None else w["b2"].expand(7, 13)
    torch.testing.assert_close(moe_triton(x, mask, **w, merge=merge), want, atol=0, rtol=0)


def test_tokens_without_experts_and_experts_without_tokens():
    x, mask, w = _case(20, 13, 5, 6, density=0.6)
    mask[2] = False  # a token that runs no expert
    mask[:, 1:3] = False  # experts that no token chose...
    w["w1"][1] *= 1e38  # ...one of them overflows to inf: it must add nothing, not NaN
    got = moe_triton(x, mask, **w)
    torch.testing.assert_close(got, moe_reference(x, mask, **w), **TOL[torch.float32])
    torch.testing.assert_close(got[2], w["b2"], atol=0, rtol=0)


def test_ordered_merge_is_repeatable_and_atomic_agrees():
    x, mask, w = _case(20, 24, 5, 4, density=0.5, dtype=torch.float16)
    first, again = moe_triton(x, mask, **w), moe_triton(x, mask, **w)
    assert torch.equal(first, again)
    atomic = moe_triton(x, mask, **w, merge="atomic")
    torch.testing.assert_close(atomic, first, **TOL[torch.float16])


@pytest.mark.parametrize("merge", ["ordered", "atomic"])
def test_token_chunks_give_the_bits_of_one_call(merge, monkeypatch):
    x, mask, w = _case(41, 20, 5, 4, density=0.5, dtype=torch.float16)
    whole = moe_triton(x, mask, **w, merge=merge, chunk_tokens=41)

    def same(got):  # atomics on a GPU add in a varying order, chunked or not
        if merge == "atomic" and CUDA:
            torch.testing.assert_close(got, whole, **TOL[torch.float16])
        else:
            assert torch.equal(got, whole)

    for chunk in (1, 7, 40):
        same(moe_triton(x, mask, **w, merge=merge, chunk_tokens=chunk))
    # by default the chunk follows the buffer cap: here 2 tokens' buffers per chunk
    per_token = 4 * (5 + (20 if merge == "ordered" else 0)) * 2  # E * (H [+ D]) * fp16
    monkeypatch.setattr("ponder.kernels._triton.BUFFER_BYTES", 2 * per_token)
    same(moe_triton(x, mask, **w, merge=merge))
    with pytest.raises(ConfigError, match="chunk_tokens must be >= 1"):
        moe_triton(x, mask, **w, chunk_tokens=0)


@pytest.mark.slow
def test_default_tiles_on_a_larger_layer(monkeypatch):
    """The tile sizes the GPU runs with (the fixture's 16-wide tiles undone): several 64-token
    tiles per expert, a width past one 128-wide tile."""
    monkeypatch.undo()
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, mask, w = _case(150, 136, 64, 3, density=0.6, dtype=torch.float16)
    torch.testing.assert_close(
        moe_triton(x, mask, **w), moe_reference(x, mask, **w), **TOL[torch.float16]
    )


def test_dispatcher():
    x, mask, w = _case(7, 13, 5, 3, density=0.5)
    # CUDA tensors go to Triton; CPU tensors to the CPU path, even with the interpreter on
    assert select_backend(x) == ("triton" if CUDA else "cpu")
    assert select_backend(x, "triton") == "triton"
    assert torch.equal(moe_ffn(x, mask, **w, backend="triton"), moe_triton(x, mask, **w))


def test_autograd_never_reaches_triton():
    x, mask, w = _case(7, 13, 5, 3, density=0.5)
    w["w1"].requires_grad_()
    assert select_backend(x, needs_grad=True) == ("reference" if CUDA else "cpu")
    out = moe_ffn(x, mask, **w)  # auto: a differentiable backend
    out.sum().backward()
    assert w["w1"].grad is not None
    with pytest.raises(ConfigError, match="'triton' has no backward"):
        moe_ffn(x, mask, **w, backend="triton")
    with pytest.raises(ConfigError, match=r"no backward; run it under torch\.no_grad"):
        moe_triton(x, mask, **w)
    with torch.no_grad():
        got = moe_ffn(x, mask, **w, backend="triton")
        torch.testing.assert_close(got, out.detach(), **TOL[torch.float32])


def test_argument_errors():
    x, mask, w = _case(7, 13, 5, 3, density=0.5)
    with pytest.raises(ConfigError, match="weights must have x's dtype"):
        moe_triton(x.half(), mask, **w)
    with pytest.raises(ConfigError, match=r"runs float16, bfloat16 or float32, not torch\.float64"):
        moe_triton(x.double(), mask, **{k: v.double() for k, v in w.items() if v is not None})
    with pytest.raises(ConfigError, match="merge='sorted' must be one of ordered, atomic"):
        moe_triton(x, mask, **w, merge="sorted")
    with pytest.raises(ConfigError, match="unknown activation 'swish'; known: gelu"):
        moe_triton(x, mask, **w, activation="swish")
