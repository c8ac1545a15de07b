"""`moe_ffn`: one entry point that picks an MoE backend by device and availability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

from ._cpu import moe_grouped_cpu
from ._reference import moe_reference
from ._traceable import moe_traceable
from ._triton import moe_triton, triton_runs_on, triton_status

MoEKernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Backend:
    kernel: MoEKernel
    runs_on: Callable[[torch.Tensor], bool]  # can it run on this tensor's device (and install)?
    needs: str  # what `runs_on` asks for, for error messages
    about: Callable[[], str]  # one line for `list_backends`
    differentiable: bool = True  # False: no backward, so never chosen when autograd needs one


_BACKENDS: Registry[_Backend] = Registry("MoE backend")
_BACKENDS.register("reference")(
    _Backend(moe_reference, lambda x: True, "any device", lambda: "any device; defines the result")
)
_BACKENDS.register("cpu")(
    _Backend(
        moe_grouped_cpu,
        lambda x: x.device.type == "cpu",
        "CPU tensors",
        lambda: "CPU tensors; experts run on their own tokens",
    )
)
# for torch.export: the exported program keeps a per-expert loop with data-dependent sizes
_BACKENDS.register("traceable")(
    _Backend(moe_traceable, lambda x: True, "any device", lambda: "any device; for torch.export")
)
# moe_triton imports triton only when it runs, so importing ponder.kernels never does.
_BACKENDS.register("triton")(
    _Backend(
        moe_triton,
        triton_runs_on,
        "CUDA tensors (or CPU ones under TRITON_INTERPRET=1) and the triton package",
        triton_status,
        differentiable=False,
    )
)

# "auto" takes the first of these that is registered and runs on x's device: CPU tensors the
# CPU path (also under TRITON_INTERPRET=1, which tests set), CUDA tensors Triton, others the
# reference; Triton is passed over when autograd needs a backward.
_PREFERENCE = ("cpu", "triton", "reference")


def list_backends() -> dict[str, str]:
    """Names accepted by `moe_ffn(..., backend=...)` besides "auto", each with where it runs
    and, for Triton, whether it can run here."""
    return {name: _BACKENDS.get(name).about() for name in _BACKENDS.names()}


def select_backend(x: torch.Tensor, backend: str = "auto", *, needs_grad: bool = False) -> str:
    """The backend `moe_ffn` would use for tokens `x` (and whether autograd needs a backward);
    fails if a named one cannot run there."""
    if backend == "auto":
        for name in _PREFERENCE:
            chosen = _BACKENDS.get(name)
            if chosen.runs_on(x) and (chosen.differentiable or not needs_grad):
                return name
        raise ConfigError(f"no MoE backend runs on device {x.device}; known: {_BACKENDS.names()}")
    chosen = _BACKENDS.get(backend)  # unknown name -> ConfigError listing the known ones
    if not chosen.runs_on(x):
        raise ConfigError(
            f"MoE backend {backend!r} needs {chosen.needs}, but x is on {x.device}; "
            'use backend="auto" or "reference"'
        )
    if needs_grad and not chosen.differentiable:
        raise ConfigError(
            f"MoE backend {backend!r} has no backward, but autograd needs one here; run under "
            'torch.no_grad() or torch.inference_mode(), or use backend="auto" or "reference"'
        )
    return backend


def moe_ffn(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    activation: str = "gelu",
    backend: str = "auto",
) -> torch.Tensor:
    """Dynamic-k MoE FFN [T, D] -> [T, D] on the backend chosen by `select_backend`.

    Arguments and layout as in `moe_reference`, which defines the result; `backend` overrides
    the automatic choice (tests use it to compare backends). "auto" runs CPU tensors on the CPU
    path and CUDA tensors on Triton (when installed), except where autograd needs a backward,
    which only the reference, CPU and traceable paths have; `select_backend` says which.
    """
    tensors = (x, w1, w2, b1, b2, w_up)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    kernel = _BACKENDS.get(select_backend(x, backend, needs_grad=needs_grad)).kernel
    return kernel(x, mask, w1, w2, b1=b1, b2=b2, w_up=w_up, activation=activation)
