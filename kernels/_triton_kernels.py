"""The Triton programs of the GPU MoE path: routing index, gathered first layer, second layer,
ordered merge. Launched by `_triton.moe_triton`; imported only when that runs (it imports triton)."""

from __future__ import annotations

import triton
import triton.language as tl

# Only language built-ins and functions of this module are called, none of triton.language's
# own @triton.jit helpers (tl.zeros, tl.sum, tl.cumsum, tl.sigmoid): the CPU interpreter runs
# those only if TRITON_INTERPRET=1 was set before triton was first imported, and torch imports
# triton early (torch.utils.flop_counter does), while the tests set it before importing this.


@triton.jit
def route_kernel(mask_ptr, tokens_ptr, rank_ptr, counts_ptr, T, E, BLOCK_T: tl.constexpr):
    """One program per expert e: scan mask[:, e] and write e's token list, each token's rank in
    it (-1 where e was not selected) and e's token count. Tokens stay in ascending order."""
    # T=tokens, E=experts; mask [T, E] uint8; tokens, rank [E, T] int32; counts [E] int32
    e = tl.program_id(0)
    count = e * 0  # int32 scalar: e's tokens so far
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)  # [BLOCK_T]
        sel = tl.load(mask_ptr + ts * E + e, mask=ts < T, other=0).to(tl.int32)  # 0/1
        rank = count + tl.associative_scan(sel, 0, _add) - 1  # [BLOCK_T], valid where sel
        tl.store(rank_ptr + e * T + ts, tl.where(sel != 0, rank, -1), mask=ts < T)
        tl.store(tokens_ptr + e * T + rank, ts, mask=(ts < T) & (sel != 0))
        count += tl.reduce(sel, 0, _add)
    tl.store(counts_ptr + e, count)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _activate(z, ACT: tl.constexpr):
    """act(z) in float32, the same functions as the activation registry's."""
    if ACT == 0:
        z = tl.maximum(z, 0.0)
    elif ACT == 1:
        z = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 2:
        inner = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        z = 0.5 * z * (1.0 + (2.0 * _sigmoid(2.0 * inner) - 1.0))  # tanh(u) = 2σ(2u) - 1
    else:
        z = z * _sigmoid(z)
    return z


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """acc + a @ b in float32. DOT_F32 converts the operands to float32 first: triton's CPU
    interpreter (3.7.1) multiplies bfloat16 operands as their raw 16-bit integers."""
    if DOT_F32:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def up_kernel(
    x_ptr,
    tokens_ptr,
    counts_ptr,
    w1_ptr,
    b1_ptr,
    wup_ptr,
    h_ptr,
    T,
    D,
    H,
    ACT: tl.constexpr,
    HAS_B1: tl.constexpr,
    GATED: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """h[e, rows] = act(x[tokens[e, rows]] W1_e + b1_e) (* x Wup_e) for one tile of expert e's
    gathered tokens; a tile past e's token count exits at once. Accumulates in float32."""
    # T=tokens, D=width, H=expert hidden; x [T, D], w1/wup [E, D, H], h [E, T, H]
    pid_m, e, pid_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    count = tl.load(counts_ptr + e)
    if pid_m * BLOCK_M >= count:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] places in e's token list
    row_ok = rows < count
    tok = tl.load(tokens_ptr + e * T + rows, mask=row_ok, other=0).to(tl.int64)  # [BLOCK_M]
    hs = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)  # [BLOCK_H]
    h_ok = hs < H
    w_base = e.to(tl.int64) * D * H
    acc = tl.full([BLOCK_M, BLOCK_H], 0.0, tl.float32)
    up = tl.full([BLOCK_M, BLOCK_H], 0.0, tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        k_ok = ks < D
        a = tl.load(x_ptr + tok[:, None] * D + ks[None, :], row_ok[:, None] & k_ok[None, :], 0.0)
        w_off = w_base + ks[:, None] * H + hs[None, :]  # [BLOCK_K, BLOCK_H]
        w_ok = k_ok[:, None] & h_ok[None, :]
        acc = _dot(a, tl.load(w1_ptr + w_off, w_ok, 0.0), acc, PRECISION, DOT_F32)
        if GATED:
            up = _dot(a, tl.load(wup_ptr + w_off, w_ok, 0.0), up, PRECISION, DOT_F32)
    if HAS_B1:
        acc += tl.load(b1_ptr + e * H + hs, mask=h_ok, other=0.0).to(tl.float32)[None, :]
    acc = _activate(acc, ACT)
    if GATED:
        acc = acc * up
    out = h_ptr + (e * T + rows).to(tl.int64)[:, None] * H + hs[None, :]
    tl.store(out, acc.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & h_ok[None, :])


@triton.jit
def down_kernel(
    h_ptr,
    tokens_ptr,
    counts_ptr,
    w2_ptr,
    y_ptr,
    T,
    D,
    H,
    ATOMIC: tl.constexpr,
    ONE_K: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """h[e, rows] W2_e for one tile of expert e's tokens, BLOCK_D output columns at a time,
    accumulated in float32, then either stored as expert e's partial output y[e, rows]
    (ATOMIC=False) or atomically added into y[tokens] (ATOMIC=True, y float32 [T, D]). ONE_K
    (H <= BLOCK_K: the whole expert in one reduction step) loads the h tile once for all
    columns. A tile past e's token count exits at once."""
    # T=tokens, D=width, H=expert hidden; h [E, T, H], w2 [E, H, D], y [E, T, D] or [T, D]
    pid_m, e = tl.program_id(0), tl.program_id(1)
    count = tl.load(counts_ptr + e)
    if pid_m * BLOCK_M >= count:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    row_ok = rows < count
    slot = (e * T + rows).to(tl.int64)  # [BLOCK_M] rows of h (and of y when not ATOMIC)
    if ATOMIC:
        tok = tl.load(tokens_ptr + e * T + rows, mask=row_ok, other=0).to(tl.int64)  # [BLOCK_M]
    w_base = e.to(tl.int64) * H * D
    ks = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    if ONE_K:
        a = tl.load(
            h_ptr + slot[:, None] * H + ks[None, :], row_ok[:, None] & (ks < H)[None, :], 0.0
        )
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)  # [BLOCK_D]
        d_ok = ds < D
        acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
        for k0 in range(0, H, BLOCK_K):  # a single step when ONE_K
            kk = k0 + ks
            if not ONE_K:
                a = tl.load(
                    h_ptr + slot[:, None] * H + kk[None, :],
                    row_ok[:, None] & (kk < H)[None, :],
                    0.0,
                )
            w = tl.load(
                w2_ptr + w_base + kk[:, None] * D + ds[None, :],
                (kk < H)[:, None] & d_ok[None, :],
                0.0,
            )
            acc = _dot(a, w, acc, PRECISION, DOT_F32)
        ok = row_ok[:, None] & d_ok[None, :]
        if ATOMIC:
            tl.atomic_add(y_ptr + tok[:, None] * D + ds[None, :], acc, mask=ok)
        else:
            tl.store(y_ptr + slot[:, None] * D + ds[None, :], acc.to(y_ptr.dtype.element_ty), ok)


@triton.jit
def merge_kernel(
    y_ptr,
    rank_ptr,
    b2_ptr,
    out_ptr,
    T,
    D,
    E,
    HAS_B2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[t] = b2 + sum over e = 0, 1, ... of y[e, rank[e, t]] where rank >= 0: each token's
    partial outputs added in expert order, in float32, so the result never depends on timing."""
    # T=tokens, D=width, E=experts; y [E, T, D], rank [E, T] int32, out [T, D]
    pid_m, pid_d = tl.program_id(0), tl.program_id(1)
    ts = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    t_ok = ts < T
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
    d_ok = ds < D
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    if HAS_B2:
        acc += tl.load(b2_ptr + ds, mask=d_ok, other=0.0).to(tl.float32)[None, :]
    for e in range(E):
        rank = tl.load(rank_ptr + e * T + ts, mask=t_ok, other=-1)  # [BLOCK_M]
        sel = rank >= 0
        slot = (e * T + rank).to(tl.int64)
        part = tl.load(y_ptr + slot[:, None] * D + ds[None, :], sel[:, None] & d_ok[None, :], 0.0)
        acc += part.to(tl.float32)
    out = out_ptr + ts.to(tl.int64)[:, None] * D + ds[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=t_ok[:, None] & d_ok[None, :])
