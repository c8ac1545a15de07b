"""Finding a model's FFN activation modules by type, and swapping them (e.g. GELU → ReLU) in place."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from torch import nn

from ponder._convert.surgery import SIDECARS, replace_module
from ponder._core.errors import ConfigError, NoEffectWarning
from ponder._core.registry import Registry

__all__ = ["activation_kind", "find_activations", "list_activation_kinds", "swap_activation_"]

# transformers.activations classes, matched by name so that finding them needs no transformers
# import. The tanh forms (NewGELU = GPT-2's gelu_new, FastGELU) are one function up to rounding.
_HF_KINDS = {
    "GELUActivation": "gelu",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "SiLUActivation": "silu",
}

# What `swap_activation_(model, to=kind)` puts in: one fresh module per replaced activation.
_MAKERS: Registry[Callable[[], nn.Module]] = Registry("activation kind")
_MAKERS.register("relu")(nn.ReLU)
_MAKERS.register("gelu")(nn.GELU)  # exact (erf) form, as in BERT and MiniLM
_MAKERS.register("gelu_tanh")(lambda: nn.GELU(approximate="tanh"))  # GPT-2
_MAKERS.register("silu")(nn.SiLU)  # gate of SwiGLU FFNs


def list_activation_kinds() -> list[str]:
    """The kinds `find_activations` reports and `swap_activation_` accepts as `to`."""
    return _MAKERS.names()


def activation_kind(module: nn.Module) -> str | None:
    """The kind ("relu", "gelu", "gelu_tanh", "silu") of an activation module, else None."""
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.SiLU):
        return "silu"
    for cls in type(module).__mro__:  # subclasses of the transformers classes count too
        if cls.__module__.startswith("transformers.") and cls.__name__ in _HF_KINDS:
            return _HF_KINDS[cls.__name__]
    return None


def find_activations(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """`(path, module, kind)` for every known activation module in `model`, in module order.

    Found by type (torch's ReLU/GELU/SiLU and transformers' activation classes such as the
    `intermediate_act_fn` of BERT's FFNs); an activation applied as a function (F.gelu inside a
    forward) cannot be found. Every module of those types counts, so a model with activations
    outside its FFNs (a classifier head's ReLU, say) should name the FFN ones with `paths=` in
    the functions that take it. A module shared between places is listed under each path;
    ponder's attached exit heads are skipped.
    """
    found = []
    for path, module in model.named_modules(remove_duplicate=False):
        if path.split(".")[0] in SIDECARS:
            continue
        kind = activation_kind(module)
        if kind is not None:
            found.append((path, module, kind))
    return found


def select_activations(
    model: nn.Module, paths: Iterable[str] | None
) -> list[tuple[str, nn.Module, str]]:
    """`find_activations(model)`, restricted to `paths` (every one must be a known activation)."""
    found = find_activations(model)
    if paths is None:
        return found
    by_path = {path: (path, module, kind) for path, module, kind in found}
    wanted = list(paths)
    missing = [p for p in wanted if p not in by_path]
    if missing:
        raise ConfigError(
            f"{missing} are not activation modules ponder knows ({', '.join(list_activation_kinds())})"
            f"; the model's are: {list(by_path)[:12]}"
        )
    return [by_path[p] for p in wanted]


def swap_activation_(
    model: nn.Module, to: str = "relu", paths: Iterable[str] | None = None
) -> dict[str, nn.Module]:
    """Replace activation modules by fresh ones of kind `to`, in place; returns {path: old module}.

    `paths=None` swaps every activation `find_activations` reports that is not already `to`;
    activations already of that kind are left alone, so swapping twice changes nothing (and
    warns `NoEffectWarning`, as does a model with nothing to swap).
    """
    make = _MAKERS.get(to)
    replaced: dict[str, nn.Module] = {}
    for path, _, kind in select_activations(model, paths):
        if kind != to:
            replaced[path] = replace_module(model, path, make())
    if not replaced:
        warnings.warn(
            f"swap_activation_ changed nothing: no activation in {type(model).__name__} "
            f"other than {to!r} was found (or named in paths)",
            NoEffectWarning,
            stacklevel=2,
        )
    return replaced
