"""`ponder bench moe-export` programs: one FFN layer as three (x, mask) -> y modules (dense,
masked, grouped), exported to ONNX Runtime and to ExecuTorch/XNNPACK, with callables that run
them and a count of the operators each program holds."""

from __future__ import annotations

import collections
import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ponder._core.errors import ConfigError, MissingDependencyError
from ponder._moe.config import MoEFFN
from ponder.kernels import get_activation, moe_reference, moe_traceable

__all__ = [
    "BACKENDS",
    "DenseFFN",
    "ExpertFFN",
    "executorch_threads",
    "export_variants",
    "runtime_versions",
]

BACKENDS = ("onnx", "pte")  # ONNX Runtime, CPU EP; ExecuTorch runtime, XNNPACK delegate


class DenseFFN(nn.Module):
    """The original FFN (Linear -> activation -> Linear); takes the mask only to share the
    (x, mask) signature, and ignores it."""

    def __init__(self, first: nn.Linear, second: nn.Linear, activation: str):
        super().__init__()
        self.first, self.second, self.activation = first, second, activation

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # T=tokens, D=width
        return self.second(get_activation(self.activation)(self.first(x)))  # [T, D]


_KERNELS = {"masked": moe_reference, "grouped": moe_traceable}


class ExpertFFN(nn.Module):
    """The experts of an MoEFFN (weights copied, no router) run by one kernel: "masked"
    (`moe_reference`: every expert, unselected ones zeroed) or "grouped" (`moe_traceable`:
    each expert on the rows that selected it, data-dependent sizes)."""

    def __init__(self, layer: MoEFFN, form: str):
        super().__init__()
        self.form, self.activation = form, layer.activation
        for name in ("w1", "b1", "w2", "b2"):
            setattr(self, name, nn.Parameter(getattr(layer, name).detach().clone()))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # T=tokens, D=width, E=experts; x [T, D], mask [T, E] -> [T, D]
        return _KERNELS[self.form](
            x, mask, self.w1, self.w2, b1=self.b1, b2=self.b2, activation=self.activation
        )


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], max_tokens: int):
    """torch.export with T dynamic in [1, max_tokens] (export/_stages/trace.py bounds tokens at 512,
    for whole sequences; one layer sees every token of a batch)."""
    tokens = torch.export.Dim("tokens", min=1, max=max_tokens)
    with torch.no_grad():
        return torch.export.export(
            module.eval(), example, dynamic_shapes=({0: tokens}, {0: tokens}), strict=False
        )


def _onnx(module: nn.Module, example, max_tokens: int, path: Path, threads: int):
    """Write the ONNX file; return a runner (ORT session, CPU EP, `threads` intra-op threads,
    spinning off) and the ONNX node count by op type."""
    import onnx
    import onnxruntime as ort

    from ponder.export._formats.onnx import write_onnx_stage
    from ponder.export._stages.plan import Stage
    from ponder.runtime._backends.base import session_options

    stage = Stage(module, ["x", "mask"], ["y"], [], False)
    write_onnx_stage(stage, _export(module, example, max_tokens), path)
    session = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]  # the dense graph may drop the unused mask

    def make(x: torch.Tensor, mask: torch.Tensor) -> Callable[[], Any]:
        feed = {k: v for k, v in (("x", x.numpy()), ("mask", mask.numpy())) if k in names}
        return lambda: session.run(["y"], feed)[0]

    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return make, {"nodes": sum(ops.values()), "ops": dict(sorted(ops.items()))}


def _pte(module: nn.Module, example, max_tokens: int, path: Path):
    """Write the .pte (XNNPACK partitioner); return a runner on the ExecuTorch runtime and the
    operators left outside the delegate (they run on ExecuTorch's portable kernels)."""
    from executorch.runtime import Runtime

    from ponder.export._formats.pte import executorch_exporter

    exir, partitioner = executorch_exporter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        edge = exir.to_edge_transform_and_lower(
            {"forward": _export(module, example, max_tokens)}, partitioner=[partitioner()]
        )
        graph = edge.exported_program("forward").graph
        ops = collections.Counter(filter(None, map(_edge_op, graph.nodes)))
        path.write_bytes(edge.to_executorch().buffer)
    method = Runtime.get().load_program(path).load_method("forward")

    def make(x: torch.Tensor, mask: torch.Tensor) -> Callable[[], Any]:
        return lambda: method.execute([x, mask])[0]

    delegates = ops.pop("executorch_call_delegate", 0)
    return make, {"xnnpack_delegates": delegates, "portable_ops": dict(sorted(ops.items()))}


def _edge_op(node: torch.fx.Node) -> str | None:
    """Short name of a tensor operator in a lowered graph ("mm", "executorch_call_delegate");
    None for placeholders, size arithmetic, shape asserts and tuple indexing."""
    if node.op != "call_function":
        return None
    name = getattr(node.target, "__name__", str(node.target)).removeprefix("aten.").split(".")[0]
    skip = name in ("getitem", "sym_size", "_assert_scalar", "scalar_tensor")
    return None if skip or node.target.__module__ == "_operator" else name


@contextlib.contextmanager
def executorch_threads(threads: int) -> Iterator[int]:
    """Size ExecuTorch's process-wide threadpool (XNNPACK's threads) for the block; yields
    the count in effect and restores the previous one after."""
    from executorch.extension.pybindings import portable_lib

    before = portable_lib._threadpool_get_thread_count()
    portable_lib._unsafe_reset_threadpool(threads)
    try:
        yield portable_lib._threadpool_get_thread_count()
    finally:
        portable_lib._unsafe_reset_threadpool(before)


def export_variants(
    modules: dict[str, nn.Module],
    example: tuple[torch.Tensor, torch.Tensor],
    max_tokens: int,
    folder: Path,
    threads: int,
    backends: tuple[str, ...] = BACKENDS,
) -> tuple[dict[str, dict[str, Callable]], dict[str, dict[str, Any]]]:
    """Export every module to every backend (traced afresh for each: ExecuTorch lowering
    consumes the program). Returns per backend and variant a `make(x, mask)` that builds a
    zero-argument call, and a description of each program (file size, operators)."""
    _require(backends)
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, dict[str, Callable]] = {b: {} for b in backends}
    info: dict[str, dict[str, Any]] = {b: {} for b in backends}
    for name, module in modules.items():
        for backend in backends:
            path = folder / f"{name}.{backend}"
            if backend == "onnx":
                makers[backend][name], info[backend][name] = _onnx(
                    module, example, max_tokens, path, threads
                )
            else:
                makers[backend][name], info[backend][name] = _pte(module, example, max_tokens, path)
            info[backend][name]["bytes"] = path.stat().st_size
    return makers, info


def _require(backends: tuple[str, ...]) -> None:
    import importlib.util

    needs = {
        "onnx": [("onnx", "onnx"), ("onnxruntime", "onnx"), ("onnxscript", "onnx")],
        "pte": [("executorch", "export")],
    }
    for backend in backends:
        if backend not in needs:
            raise ConfigError(f"unknown backend {backend!r}; known: {list(needs)}")
        for package, extra in needs[backend]:
            if importlib.util.find_spec(package) is None:
                raise MissingDependencyError(package, extra, f"the {backend} MoE-export benchmark")


def runtime_versions() -> dict[str, str | None]:
    import importlib.util
    from importlib.metadata import version

    packages = ("torch", "executorch", "onnxruntime", "onnx", "onnxscript")
    return {p: version(p) if importlib.util.find_spec(p) else None for p in packages}
