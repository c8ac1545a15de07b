"""GPU path of the MoE FFN in Triton: a routing index built on the device, then each expert run
on its own tokens only. Same signature as `moe_reference`; triton is imported on first call."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from types import SimpleNamespace
from typing import NamedTuple

import torch

from ponder._core.errors import ConfigError, MissingDependencyError

from ._common import check_moe_args, get_activation

# Activation name -> the code `_triton_kernels._activate` switches on.
_ACTIVATION_CODES = {"relu": 0, "gelu": 1, "gelu_tanh": 2, "silu": 3}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MERGES = ("ordered", "atomic")

# Largest tile along each dimension (M: an expert's tokens, H: expert hidden, D: width, K: the
# reduction, T: the routing scan); smaller sizes round up to a power of two, at least 16 (the
# smallest tl.dot). Not tuned yet: sdk/_bench/moe_gpu.py measures them on a GPU. Tests lower
# them to reach the multi-tile loops with tiny shapes.
MAX_BLOCK = {"M": 64, "H": 64, "D": 128, "K": 64, "T": 1024}

# Cap on the per-call buffers h [E, T, H] and (ordered merge) partials [E, T, D], which grow with
# every (token, expert) pair, selected or not: more tokens run in chunks of at most this many
# bytes of buffers (tokens are independent, so chunks give the same bits as one call).
BUFFER_BYTES = 256 * 2**20


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1): CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def triton_runs_on(x: torch.Tensor) -> bool:
    """Can the Triton path run on x's device: CUDA, or the CPU under the interpreter."""
    on_device = x.is_cuda or (x.device.type == "cpu" and interpreting())
    return on_device and triton_installed()


def triton_status() -> str:
    """One line for `list_backends`: where the Triton path runs and whether it can run here."""
    where = "CUDA tensors (CPU tensors under TRITON_INTERPRET=1)"
    if not triton_installed():
        return f"{where}; not available: triton is not installed (pip install 'ponder[kernels]')"
    version = importlib.metadata.version("triton")
    if interpreting():
        return f"{where}; available: triton {version}, interpreter on (CPU)"
    if not torch.cuda.is_available():
        return f"{where}; not available here: triton {version} is installed but no CUDA device"
    return f"{where}; available: triton {version} on {torch.cuda.get_device_name()}"


def moe_triton(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    activation: str = "gelu",
    merge: str = "ordered",
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Same result as `moe_reference`, computed on the selected (token, expert) pairs only.

    1. Routing index, one program per expert, no host sync: expert e's tokens in ascending order
       [E, T], its count [E], and each token's place in e's list [E, T] (-1: not selected).
    2. First layer: a program per (tile of e's tokens, e, tile of H) gathers x rows, multiplies
       by W1_e (and Wup_e), adds b1_e and applies the activation; h [E, T, H] in x's dtype.
    3. Second layer: h_e W2_e per (tile of e's tokens, e, tile of D).
    4. Sum over experts. merge="ordered" (default) stores each expert's partial output [E, T, D]
       in x's dtype and a third program adds each token's partials in expert order, in float32:
       the result is bitwise the same on every run, which verification (against the reference,
       across backends and exports) needs. merge="atomic" adds in float32 atomics straight
       into the output, saving the partials' memory and traffic (per selected pair, D values
       written and read again) at the price of a summation order that varies from run to run.
       sdk/_bench/moe_gpu.py times both; the default stays ordered until a measurement shows
       the atomic one is worth its nondeterminism.
    The grids are static (up to T tokens per expert); tiles past an expert's count exit at once,
    so nothing waits on the host. Weights must share x's dtype: float16, bfloat16 or float32;
    products accumulate in float32 (float32 inputs in full IEEE precision, or TF32 when
    torch.backends.cuda.matmul.allow_tf32 is set, as torch's own matmuls do). There is no
    backward: under autograd use the "reference" backend (the dispatcher does so itself).
    Memory: h [E, T, H] (T x the dense hidden width) plus, when ordered, partials [E, T, D]
    (16,384 tokens, 48 experts, D=768 in float16: 1.2 GB in one call). Tokens therefore run in
    chunks of `chunk_tokens` (default: as many as keep those buffers within BUFFER_BYTES,
    3,360 tokens of that layer); each chunk's result is the same as in one call.
    """
    # T=tokens, D=width, H=expert hidden, E=experts
    T, D, _, E = check_moe_args(x, mask, w1, w2, b1, b2, w_up)
    _check(x, mask, (w1, w2, b1, b2, w_up), activation, merge)
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ConfigError(
            f"chunk_tokens must be >= 1 (or None for the default), got {chunk_tokens}"
        )
    if T == 0 or E == 0:
        out = torch.zeros(T, D, dtype=torch.float32, device=x.device)
        return (out if b2 is None else out + b2.float()).to(x.dtype)
    k = _kernels()
    x, w1, w2 = x.contiguous(), w1.contiguous(), w2.contiguous()
    b1, b2, w_up = (None if t is None else t.contiguous() for t in (b1, b2, w_up))
    dot_f32 = x.dtype == torch.bfloat16 and interpreting()  # see `_triton_kernels._dot`
    dot = {"PRECISION": "ieee" if dot_f32 else _precision(x.dtype), "DOT_F32": dot_f32}
    act = _ACTIVATION_CODES[activation]
    if chunk_tokens is None:
        per_token = E * (w1.shape[2] + (D if merge == "ordered" else 0)) * x.element_size()
        chunk_tokens = max(1, BUFFER_BYTES // per_token)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        if chunk_tokens >= T:
            return _ffn(k, x, mask, w1, b1, w_up, w2, b2, act, merge, dot)
        parts = [
            _ffn(k, x[i : i + chunk_tokens], mask[i : i + chunk_tokens], w1, b1, w_up, w2, b2,
                 act, merge, dot)
            for i in range(0, T, chunk_tokens)
        ]  # fmt: skip
        return torch.cat(parts)


def _ffn(k, x, mask, w1, b1, w_up, w2, b2, act: int, merge: str, dot: dict) -> torch.Tensor:
    """One call's routing index, first and second layer (x and mask: a chunk of tokens)."""
    route = _route(k, mask)
    h = _first_layer(k, x, route, w1, b1, w_up, act, dot)
    return _second_layer(k, h, route, w2, b2, merge, dot)


class _Route(NamedTuple):
    """Where each expert's tokens are, built on the device (T=tokens, E=experts)."""

    tokens: torch.Tensor  # [E, T] int32: expert e's tokens in ascending order, its count first
    rank: torch.Tensor  # [E, T] int32: token t's place in e's list, -1 if e was not selected
    counts: torch.Tensor  # [E] int32


def _route(k, mask: torch.Tensor) -> _Route:
    T, E = mask.shape
    dev = mask.device
    route = _Route(
        torch.empty(E, T, dtype=torch.int32, device=dev),
        torch.empty(E, T, dtype=torch.int32, device=dev),
        torch.empty(E, dtype=torch.int32, device=dev),
    )
    flags = mask.contiguous().view(torch.uint8)  # [T, E], no copy
    k.route[(E,)](flags, *route, T, E, BLOCK_T=_block(T, "T"))
    return route


def _first_layer(k, x, route: _Route, w1, b1, w_up, act: int, dot: dict) -> torch.Tensor:
    """h [E, T, H]: expert e's hidden activations on its tokens in its first count rows."""
    (T, D), (E, _, H) = x.shape, w1.shape
    h = torch.empty(E, T, H, dtype=x.dtype, device=x.device)  # [E, T, H]
    bm, bh = _block(T, "M"), _block(H, "H")
    k.up[(_cdiv(T, bm), E, _cdiv(H, bh))](
        x, route.tokens, route.counts, w1, x if b1 is None else b1, x if w_up is None else w_up,
        h, T, D, H, ACT=act, HAS_B1=b1 is not None, GATED=w_up is not None,
        BLOCK_M=bm, BLOCK_H=bh, BLOCK_K=_block(D, "K"), **dot,
    )  # fmt: skip
    return h


def _second_layer(k, h, route: _Route, w2, b2, merge: str, dot: dict) -> torch.Tensor:
    """out [T, D] = b2 + each token's experts' h_e W2_e, summed as `merge` says."""
    (E, T, H), D = h.shape, w2.shape[2]
    bm, bd, bk = _block(T, "M"), _block(D, "D"), _block(H, "K")
    grid = (_cdiv(T, bm), E)  # each program loops over D
    tiles = {"ONE_K": bk >= H, "BLOCK_M": bm, "BLOCK_D": bd, "BLOCK_K": bk, **dot}
    if merge == "atomic":
        y = torch.zeros(T, D, dtype=torch.float32, device=h.device)  # [T, D]
        if b2 is not None:
            y += b2.float()
        k.down[grid](h, route.tokens, route.counts, w2, y, T, D, H, ATOMIC=True, **tiles)
        return y.to(h.dtype)
    parts = torch.empty(E, T, D, dtype=h.dtype, device=h.device)  # [E, T, D]
    k.down[grid](h, route.tokens, route.counts, w2, parts, T, D, H, ATOMIC=False, **tiles)
    out = torch.empty(T, D, dtype=h.dtype, device=h.device)  # [T, D]
    k.merge[(_cdiv(T, bm), _cdiv(D, bd))](
        parts, route.rank, parts if b2 is None else b2, out, T, D, E,
        HAS_B2=b2 is not None, BLOCK_M=bm, BLOCK_D=bd,
    )  # fmt: skip
    return out


def _check(x, mask, tensors, activation: str, merge: str) -> None:
    """What the Triton path needs beyond the layout `check_moe_args` checked."""
    get_activation(activation)  # an unknown name fails with the registry's list
    if activation not in _ACTIVATION_CODES:
        raise ConfigError(
            f"activation {activation!r} has no Triton kernel yet (it has: "
            f"{', '.join(_ACTIVATION_CODES)}); use backend='reference'"
        )
    if merge not in MERGES:
        raise ConfigError(f"merge={merge!r} must be one of {', '.join(MERGES)}")
    if x.dtype not in _DTYPES:
        raise ConfigError(
            f"the Triton MoE path runs float16, bfloat16 or float32, not {x.dtype}; "
            "cast the tokens and weights, or use backend='reference'"
        )
    if mask.device != x.device:
        raise ConfigError(f"mask is on {mask.device} but x on {x.device}: move it to x's device")
    for t in tensors:
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ConfigError(
                f"weights must have x's dtype and device ({x.dtype} on {x.device}); one is "
                f"{t.dtype} on {t.device}: cast the layer (e.g. .half(), .to(device)) first"
            )
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *tensors)):
        raise ConfigError(
            "the Triton MoE path has no backward; run it under torch.no_grad() or "
            "torch.inference_mode(), or use backend='reference' to train"
        )


def _kernels():
    """The Triton programs (imported here, so that `import ponder.kernels` never imports triton)."""
    if not triton_installed():
        raise MissingDependencyError("triton", "kernels", "The Triton MoE path")
    from ._triton_kernels import down_kernel, merge_kernel, route_kernel, up_kernel

    return SimpleNamespace(route=route_kernel, up=up_kernel, down=down_kernel, merge=merge_kernel)


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # applies to float32 inputs only; 16-bit ones always run on tensor cores


def _block(n: int, dim: str) -> int:
    """Tile size for a dimension of n: n rounded up to a power of two, within [16, MAX_BLOCK]."""
    return max(16, min(MAX_BLOCK[dim], 1 << max(n - 1, 0).bit_length()))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)
