"""Dynamic-k mixture-of-experts FFN kernels: a PyTorch reference, a CPU fast path, a Triton GPU
path, a dispatcher.

The stacked-expert layout every backend shares is documented in `moe_reference`.
"""

from ._common import get_activation, list_activations
from ._cpu import moe_grouped_cpu
from ._dispatch import list_backends, moe_ffn, select_backend
from ._reference import moe_reference
from ._traceable import moe_traceable
from ._triton import moe_triton

__all__ = [
    "get_activation",
    "list_activations",
    "list_backends",
    "moe_ffn",
    "moe_grouped_cpu",
    "moe_reference",
    "moe_traceable",
    "moe_triton",
    "select_backend",
]
