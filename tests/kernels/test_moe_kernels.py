"""The MoE kernels: the CPU fast path against the reference, and the dispatcher's choices (the
Triton path's own tests are in test_moe_triton.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from moe_weights import random_experts

import ponder.kernels._cpu as cpu_module
from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.kernels import (
    list_activations,
    list_backends,
    moe_ffn,
    moe_grouped_cpu,
    moe_reference,
    moe_triton,
    select_backend,
)

# float32: the fast path sums the same products in another order (grouped GEMMs, index_add_),
# so it differs from the reference by rounding only; measured max error 1e-6 on outputs of
# order 1, hence 1e-5 (the default rtol for float32 is 1.3e-6, too tight for reordered sums).
F32 = {"atol": 1e-5, "rtol": 1e-5}


def _tokens_and_mask(T, D, E, density, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, D, generator=g), torch.rand(T, E, generator=g) < density


def _dense_ffn(x, w, act):
    """The plain FFN whose hidden units are all experts' concatenated: [T, D] -> [T, D]."""
    # T=tokens, D=width, H=expert hidden, E=experts
    E, D, H = w["w1"].shape
    h = x @ w["w1"].permute(1, 0, 2).reshape(D, E * H)  # [T, E*H]
    if w["b1"] is not None:
        h = h + w["b1"].reshape(E * H)
    h = act(h)
    if w["w_up"] is not None:
        h = h * (x @ w["w_up"].permute(1, 0, 2).reshape(D, E * H))
    y = h @ w["w2"].reshape(E * H, D)  # [T, D]
    return y if w["b2"] is None else y + w["b2"]


# How each of the fast path's strategies is forced: its knobs in _cpu.py. A single token always
# takes the one-token path.
_PATHS = {
    "padded": {"_BATCHED_MAX_ROWS": 10**9, "_PAD_ROW_COST": 0.0},
    "masked_all": {"_BATCHED_MAX_ROWS": 10**9, "_PAD_ROW_COST": float("inf")},
    "per_expert": {"_BATCHED_MAX_ROWS": -1, "_WIDE_MIN_SHARE": 2.0},
    "per_expert_chunks_of_3": {"_BATCHED_MAX_ROWS": -1, "_WIDE_MIN_SHARE": 2.0, "_EXPERT_CHUNK": 3},
    "wide_and_per_expert": {"_BATCHED_MAX_ROWS": -1, "_WIDE_MIN_SHARE": 0.5, "_EXPERT_CHUNK": 3},
    "all_wide": {"_BATCHED_MAX_ROWS": -1, "_WIDE_MIN_SHARE": 0.0},
}


@pytest.fixture(params=list(_PATHS))
def cpu_path(request, monkeypatch):
    """Run each strategy of the fast path for several tokens on the same small cases."""
    for name, value in _PATHS[request.param].items():
        monkeypatch.setattr(cpu_module, name, value)
    return request.param


@pytest.mark.parametrize(
    "T,D,H,E", [(1, 13, 5, 3), (7, 13, 5, 3), (1, 13, 5, 24), (7, 13, 5, 24), (40, 13, 5, 24)]
)
@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_fast_path_matches_reference(cpu_path, T, D, H, E, density, gated, bias):
    w = random_experts(E, D, H, gated=gated, bias=bias)
    x, mask = _tokens_and_mask(T, D, E, density)
    got = moe_grouped_cpu(x, mask, **w, activation="gelu")
    torch.testing.assert_close(got, moe_reference(x, mask, **w, activation="gelu"), **F32)


@pytest.mark.parametrize("activation", list_activations())
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_every_activation(cpu_path, activation, gated):
    w = random_experts(24, 13, 5, gated=gated)
    x, mask = _tokens_and_mask(7, 13, 24, 0.3)
    got = moe_grouped_cpu(x, mask, **w, activation=activation)
    torch.testing.assert_close(got, moe_reference(x, mask, **w, activation=activation), **F32)


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_no_expert_selected_gives_the_output_bias(cpu_path, bias):
    w = random_experts(3, 13, 5, bias=bias)
    x, _ = _tokens_and_mask(7, 13, 3, 0.0)
    mask = torch.zeros(7, 3, dtype=torch.bool)
    expected = torch.zeros(7, 13) if w["b2"] is None else w["b2"].expand(7, 13)
    for kernel in (moe_reference, moe_grouped_cpu):
        torch.testing.assert_close(kernel(x, mask, **w), expected, atol=0, rtol=0)


def test_tokens_without_experts_and_experts_without_tokens(cpu_path):
    w = random_experts(24, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 24, 0.5)
    mask[2] = False  # a token that runs no expert
    mask[:, 5:9] = False  # experts that no token chose
    got = moe_grouped_cpu(x, mask, **w)
    torch.testing.assert_close(got, moe_reference(x, mask, **w), **F32)
    torch.testing.assert_close(got[2], w["b2"], atol=0, rtol=0)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("E", [3, 24])
def test_all_experts_reproduce_the_dense_ffn(cpu_path, gated, E):
    w = random_experts(E, 13, 5, gated=gated)
    x, _ = _tokens_and_mask(7, 13, E, 1.0)
    mask = torch.ones(7, E, dtype=torch.bool)
    dense = _dense_ffn(x, w, F.silu if gated else F.gelu)
    act = "silu" if gated else "gelu"
    for kernel in (moe_reference, moe_grouped_cpu):
        torch.testing.assert_close(kernel(x, mask, **w, activation=act), dense, **F32)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_bfloat16(cpu_path, gated):
    w = {
        k: None if v is None else v.bfloat16()
        for k, v in random_experts(24, 13, 5, gated=gated).items()
    }
    x, mask = _tokens_and_mask(40, 13, 24, 0.3)
    x = x.bfloat16()
    got = moe_grouped_cpu(x, mask, **w)
    assert got.dtype == torch.bfloat16
    # The reference computes in float32 from the same bf16 values; the fast path rounds its
    # hidden activations and each expert's output to bf16 (8-bit mantissa) before summing.
    # Measured: at most one bf16 step of the output (0.016-0.031 on outputs up to 4), so the
    # tolerance is about one step at that size rather than bf16's default 1.6e-2 relative.
    torch.testing.assert_close(got, moe_reference(x, mask, **w), atol=3e-2, rtol=2e-2)


def test_dispatcher_picks_by_device_and_honours_overrides():
    w = random_experts(3, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 3, 0.5)
    assert list(list_backends()) == ["cpu", "reference", "traceable", "triton"]
    assert select_backend(x) == "cpu"
    # Neither the CPU path nor Triton (CUDA only) runs on the meta device: the reference does.
    assert select_backend(x.to("meta")) == "reference"
    assert select_backend(x, "reference") == "reference"
    torch.testing.assert_close(moe_ffn(x, mask, **w), moe_grouped_cpu(x, mask, **w), atol=0, rtol=0)
    ref = moe_ffn(x, mask, **w, backend="reference")
    torch.testing.assert_close(ref, moe_reference(x, mask, **w), atol=0, rtol=0)


def test_dispatcher_errors():
    w = random_experts(3, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 3, 0.5)
    with pytest.raises(ConfigError, match="unknown MoE backend 'nope'; known: cpu, reference"):
        moe_ffn(x, mask, **w, backend="nope")
    with pytest.raises(ConfigError, match="'cpu' needs CPU tensors, but x is on meta"):
        select_backend(x.to("meta"), "cpu")


def test_argument_errors():
    w = random_experts(3, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 3, 0.5)
    with pytest.raises(
        ConfigError, match="unknown activation 'swish'; known: gelu, gelu_tanh, relu, silu"
    ):
        moe_ffn(x, mask, **w, activation="swish")
    with pytest.raises(ConfigError, match=r"mask has shape \(7, 4\) .* need \(7, 3\)"):
        moe_ffn(x, torch.ones(7, 4, dtype=torch.bool), **w)
    with pytest.raises(ConfigError, match="mask must be a bool tensor"):
        moe_ffn(x, mask.float(), **w)
    with pytest.raises(ConfigError, match=r"x must be \[T, D\]"):
        moe_ffn(x[None], mask, **w)


def test_triton_is_listed_with_whether_it_can_run(monkeypatch):
    import ponder.kernels._triton as triton_module

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_module, "triton_installed", lambda: False)
    assert list_backends()["triton"] == (
        "CUDA tensors (CPU tensors under TRITON_INTERPRET=1); not available: triton is not "
        "installed (pip install 'ponder[kernels]')"
    )
    w = random_experts(3, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 3, 0.5)
    with pytest.raises(ConfigError, match=r"'triton' needs CUDA tensors .* but x is on cpu"):
        moe_ffn(x, mask, **w, backend="triton")
    with pytest.raises(MissingDependencyError, match=r"pip install 'ponder\[kernels\]'"):
        moe_triton(x, mask, **w)  # called directly: past the dispatcher's check


def test_importing_the_kernels_does_not_import_triton():
    probe = "import sys, ponder.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unselected_overflow_does_not_leak(cpu_path):
    """Paths that run an expert over all tokens must drop unselected pairs like the reference's
    `where` does: an overflowing (inf) hidden unit of a pair the mask left out adds nothing."""
    w = random_experts(3, 13, 5)
    x, mask = _tokens_and_mask(7, 13, 3, 0.9)
    w["w1"][1] *= 1e38  # expert 1 overflows to inf for every token...
    mask[:, 1] = False  # ...and no token chose it
    got = moe_grouped_cpu(x, mask, **w)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, moe_reference(x, mask, **w), **F32)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_gradients_match_the_reference(cpu_path, gated):
    """Every path is differentiable (the masked ones change h in place after the activation)."""
    grads = []
    for kernel in (moe_reference, moe_grouped_cpu):
        w = random_experts(24, 16, 8, gated=gated)
        w = {k: None if v is None else v.requires_grad_() for k, v in w.items()}
        x, mask = _tokens_and_mask(40, 16, 24, 0.6)
        kernel(x.requires_grad_(), mask, **w).square().sum().backward()
        grads.append([x.grad] + [v.grad for v in w.values() if v is not None])
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, **F32)


def _tworandom_experts(T: int, E: int) -> torch.Tensor:
    """Half the tokens chose expert 0, the other half expert 1: [T, E]."""
    mask = torch.zeros(T, E, dtype=torch.bool)
    mask[: T // 2, 0] = mask[T // 2 :, 1] = True
    return mask


@pytest.mark.parametrize(
    "T,mask,expected",
    [
        (128, 0.8, ["run_masked_all"]),  # most pairs selected: mask, gather nothing
        (128, 0.2, ["run_padded"]),  # few: gather them into padded blocks
        (256, "two experts", ["run_per_expert"]),  # both batched forms would run 12x the rows
        (1024, 0.5, ["run_per_expert"]),  # many tokens: loop, no expert above the wide share
        (1024, 0.95, ["run_masked_wide", "run_per_expert"]),  # experts most tokens chose
    ],
)
def test_strategy_choice(monkeypatch, T, mask, expected):
    """Which strategy each kind of call takes (results are the same on all; see above)."""
    ran = []
    for name in ("run_masked_all", "run_padded", "run_per_expert", "run_masked_wide"):
        monkeypatch.setattr(cpu_module, name, lambda *a, name=name, **k: ran.append(name))
    w = random_experts(24, 16, 8)
    x, random_mask = _tokens_and_mask(T, 16, 24, 0.0 if isinstance(mask, str) else mask)
    moe_grouped_cpu(x, _tworandom_experts(T, 24) if isinstance(mask, str) else random_mask, **w)
    assert ran == expected
