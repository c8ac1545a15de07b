"""Find the dense FFNs of a model (D -> H -> D, optionally gated) and read out their weights.

Supported forms: `Linear -> activation -> Linear` inside an nn.Sequential, BERT-like
`intermediate`/`output` pairs, GPT-2-like `c_fc`/`act`/`c_proj` MLPs (Linear or HF Conv1D),
and gated `gate_proj`/`up_proj`/`down_proj` FFNs (SwiGLU, e.g. Llama).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ponder._convert.surgery import get_module
from ponder._core.errors import UnsupportedModelError

__all__ = ["FFNSpec", "activation_name", "find_ffns", "linear_weights"]

# HF transformers activation classes, by name so that ponder need not import transformers.
_HF_ACTIVATIONS = {
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",  # the tanh formula written out; equal to float rounding
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "SiLUActivation": "silu",
}


@dataclass(frozen=True)
class FFNSpec:
    """One dense FFN: where it is, its form, and which modules hold its parts.

    path: the module that holds the FFN (the nn.Sequential, BERT layer or MLP), as a user names
    it in `MoEConfig(ffns=...)`. moe_path: where the MoE module goes. first/up/second: paths of
    the first layer (the gate projection when gated), the up projection (gated only) and the
    output layer. folded: modules whose work the MoE module takes over, replaced by identities.
    """

    path: str
    kind: str  # "sequential" | "bert" | "gpt2" | "gated"
    moe_path: str
    first: str
    second: str
    up: str | None
    activation: str
    folded: tuple[str, ...]


def activation_name(module: object) -> str | None:
    """The `ponder.kernels` activation name of an activation module, or None if unsupported."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.Module):
        return _HF_ACTIVATIONS.get(type(module).__name__)
    return None


def _is_conv1d(module: nn.Module) -> bool:
    """HF's GPT-2 `Conv1D`: a linear layer whose weight is stored transposed, [in, out]."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")


def _dims(module: object) -> tuple[int, int] | None:
    """(in, out) features of a Linear or Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Module) and _is_conv1d(module):
        return module.nx, module.nf
    return None


def linear_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [out, in], bias [out] | None) of a Linear or Conv1D, in nn.Linear layout."""
    if _is_conv1d(module):
        return module.weight.detach().t(), module.bias.detach()
    bias = None if module.bias is None else module.bias.detach()
    return module.weight.detach(), bias


def _ffn_dims_ok(first: object, second: object, up: object = None) -> bool:
    """first: D -> H, second: H -> D (and up: D -> H)."""
    a, b = _dims(first), _dims(second)
    if a is None or b is None or b != (a[1], a[0]):
        return False
    return up is None or _dims(up) == a


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _sequential(path: str, seq: nn.Sequential) -> list[FFNSpec]:
    names = list(seq._modules)
    found, i = [], 0
    while i < len(names) - 2:
        first, act, second = (seq._modules[n] for n in names[i : i + 3])
        name = activation_name(act)
        if name and _ffn_dims_ok(first, second):
            p = [_join(path, n) for n in names[i : i + 3]]
            found.append(FFNSpec(path, "sequential", p[0], p[0], p[2], None, name, (p[1], p[2])))
            i += 3  # FFNs never share a layer: in L -> act -> L -> act -> L only the first counts
        else:
            i += 1
    return found


def _bert(path: str, module: nn.Module) -> list[FFNSpec]:
    inter, out = getattr(module, "intermediate", None), getattr(module, "output", None)
    first, second = getattr(inter, "dense", None), getattr(out, "dense", None)
    name = activation_name(getattr(inter, "intermediate_act_fn", None))
    if not (name and _ffn_dims_ok(first, second)):
        return []
    moe, dense_out = _join(path, "intermediate"), _join(path, "output", "dense")
    return [FFNSpec(path, "bert", moe, _join(moe, "dense"), dense_out, None, name, (dense_out,))]


def _gpt2(path: str, module: nn.Module) -> list[FFNSpec]:
    first, second = getattr(module, "c_fc", None), getattr(module, "c_proj", None)
    name = activation_name(getattr(module, "act", None))
    if not (name and _ffn_dims_ok(first, second)):
        return []
    p = [_join(path, n) for n in ("c_fc", "act", "c_proj")]
    return [FFNSpec(path, "gpt2", p[0], p[0], p[2], None, name, (p[1], p[2]))]


def _gated(path: str, module: nn.Module) -> list[FFNSpec]:
    gate, up = getattr(module, "gate_proj", None), getattr(module, "up_proj", None)
    down = getattr(module, "down_proj", None)
    act = getattr(module, "act_fn", getattr(module, "act", None))
    name = activation_name(act)
    if not (name and _ffn_dims_ok(gate, down, up)):
        return []
    gate_path, up_path, down_path = (_join(path, n) for n in ("gate_proj", "up_proj", "down_proj"))
    return [FFNSpec(path, "gated", path, gate_path, down_path, up_path, name, ())]


def _at(path: str, module: nn.Module) -> list[FFNSpec]:
    if isinstance(module, nn.Sequential):
        return _sequential(path, module)
    for form in (_bert, _gpt2, _gated):
        found = form(path, module)
        if found:
            return found
    return []


def find_ffns(model: nn.Module, paths: tuple[str, ...] | None = None) -> list[FFNSpec]:
    """The dense FFNs of `model`, in module order: all that are found, or those at `paths`.

    A named path may be the FFN's holder (`FFNSpec.path`) or where its MoE goes (`moe_path`);
    one that holds no supported FFN raises UnsupportedModelError saying what is there.
    """
    if paths is not None:
        return [spec for p in paths for spec in _named(model, p)]
    found: list[FFNSpec] = []
    for path, module in model.named_modules():
        found.extend(_at(path, module))
    return found


def _named(model: nn.Module, path: str) -> list[FFNSpec]:
    module = get_module(model, path)
    found = _at(path, module)
    if not found:  # maybe the path names where the MoE goes, e.g. a BERT layer's intermediate
        parent = path.rpartition(".")[0]
        found = [s for s in _at(parent, get_module(model, parent)) if s.moe_path == path]
    if not found:
        children = ", ".join(f"{n}: {type(m).__name__}" for n, m in module.named_children())
        raise UnsupportedModelError(
            f"{path!r} is a {type(module).__name__} (children: {children or 'none'}), not a "
            "supported dense FFN. ponder converts Linear -> activation -> Linear inside an "
            "nn.Sequential, BERT-like layers (intermediate.dense + output.dense), GPT-2-like "
            "MLPs (c_fc, act, c_proj) and gated FFNs (gate_proj, up_proj, down_proj), with "
            "activations ReLU, GELU or SiLU. Name the module that holds such an FFN, or leave "
            "MoEConfig(ffns=None) to find them all."
        )
    return found
