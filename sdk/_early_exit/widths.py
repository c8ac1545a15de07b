"""A head's input width found from the model's modules alone, without running it: the output
shape of a block propagated through the modules around it (see `head_width`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from torch import nn

from ponder._convert.surgery import get_module, sequential_links
from ponder._core.errors import UnsupportedModelError

__all__ = ["head_width"]


def head_width(model: nn.Module, path: str, pooling: str) -> int:
    """The width of `Pool(pooling)` on the output of the block at `path`, without running it.

    Sources, most trusted first: (1) the output shape propagated through the modules that run
    before and inside the block, as far as their torch classes fix it: activations, norms,
    pools and dropout keep the channels, so this walks back to the last Conv/Linear, and it
    follows adaptive pools and Flatten exactly; (2) the first module that takes the output in
    an nn.Sequential (a Conv's in_channels, a Linear's in_features): the model could not run if
    it disagreed, and it settles a Flatten of a map whose size depends on the input; (3) the
    width attributes of a module with a forward of its own (a transformer block), which are a
    guess, walked forward the same way; (4) that guess over the whole block, as ponder always
    made it. Meta tensors are no help here: they need the input shape, which is what is missing.
    """
    block = get_module(model, path)
    before, after = _chain_around(model, path)
    out = _fold([*before, block], _Shape(why="no module before it declares a width"))
    width = out.width(pooling) if out.exact else None
    if width is None:
        known = out if out.exact else _Shape()
        width = known.given(*_demand(after, known)).width(pooling)
    if width is None:
        width = out.width(pooling) or _declared_width(block)
    if width is None:
        raise UnsupportedModelError(
            f"cannot tell the output width of block {path!r} ({type(block).__name__}): "
            f"{out.why}, and no module after it declares the width it takes. Pass "
            "example_inputs=... to ponder.convert_ so ponder can run the model once"
        )
    return width


@dataclass(frozen=True)
class _Shape:
    """What is known of a tensor [B, *dims] before anything runs. dims None: the rank is unknown
    and only `chan` (dim 1) and `last` (the last dim) may be; a None entry is an unknown size.
    `exact` is False when it rests on a guess (`_declared_width`); `why` says what was lost."""

    dims: tuple[int | None, ...] | None = None
    chan: int | None = None
    last: int | None = None
    exact: bool = True
    why: str = ""

    def width(self, pooling: str) -> int | None:
        """`Pool(pooling)(x).shape[-1]`: dim 1 of a 2-D tensor or (avg) of a feature map, else
        the last dim. A tensor of unknown rank is taken as [B, D], as a Linear's output is."""
        if self.dims is not None:
            return self.dims[0] if pooling == "avg" or len(self.dims) == 1 else self.dims[-1]
        first, second = (self.chan, self.last) if pooling == "avg" else (self.last, self.chan)
        return first if first is not None else second

    def given(self, chan: int | None, last: int | None) -> _Shape:
        """This shape with dim 1 and the last dim filled in where they are unknown."""
        if self.dims is None:
            return replace(self, chan=self.chan or chan, last=self.last or last)
        dims = list(self.dims)
        dims[0] = dims[0] or chan or (last if len(dims) == 1 else None)
        dims[-1] = dims[-1] or last
        return replace(self, dims=tuple(dims))


def _torch_class(module: nn.Module) -> type | None:
    """The torch.nn class whose forward `module` runs (a subclass that keeps the forward, such
    as ponder's FoldedIntoMoE(nn.Identity), counts), or None for a forward of its own."""
    for cls in type(module).__mro__:
        if "forward" in vars(cls):
            return cls if cls.__module__.startswith("torch.nn.modules.") else None
    return None


def _group(module: nn.Module) -> str:
    """How `module` changes the shape of what it is given, as one word ("own": unknown)."""
    cls = _torch_class(module)
    family = cls.__module__.rpartition(".")[2] if cls else ""
    if cls is nn.Identity or family == "dropout":
        return "keep"
    if family == "activation":  # all keep the shape, but for these two
        return "own" if cls in (nn.GLU, nn.MultiheadAttention) else "keep"
    if family in ("batchnorm", "instancenorm", "normalization"):
        return "norm"
    if family == "pooling" and cls.__name__.startswith("Adaptive"):
        return "adaptive"
    if family in ("pooling", "padding", "upsampling"):
        return "spatial"
    if family == "conv":
        return "conv"
    return {nn.Linear: "linear", nn.Flatten: "flatten"}.get(cls, "own")


def _chain_around(model: nn.Module, path: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """The modules that run just before and just after the one at `path`, in order, as far as
    enclosing nn.Sequential chains tell (a ModuleList or a forward of its own tells nothing)."""
    before: list[nn.Module] = []
    after: list[nn.Module] = []
    while path:
        parent_path, _, name = path.rpartition(".")
        links = sequential_links(get_module(model, parent_path))
        if links is None:
            break
        i = [n for n, _ in links].index(name)
        before = [m for _, m in links[:i]] + before
        after = after + [m for _, m in links[i + 1 :]]
        path = parent_path
    return before, after


def _leaves(modules: list[nn.Module]) -> Iterator[nn.Module]:
    """The modules in the order they run, with nn.Sequential chains opened up."""
    for m in modules:
        links = sequential_links(m)
        if links is None:
            yield m
        else:
            yield from _leaves([c for _, c in links])


def _fold(modules: list[nn.Module], shape: _Shape) -> _Shape:
    for m in _leaves(modules):
        shape = _step(m, shape)
    return shape


def _step(m: nn.Module, x: _Shape) -> _Shape:
    """What is known of `m`'s output, given what is known of its input `x`."""
    group, name = _group(m), type(m).__name__
    if group == "keep":
        return x
    if group == "norm":  # a norm's declared sizes are facts, even after a guess
        chan = getattr(m, "num_features", None) or getattr(m, "num_channels", None)
        shape = getattr(m, "normalized_shape", None)
        if not chan and not shape:  # LocalResponseNorm
            return x
        return (x if x.exact else _Shape()).given(chan, shape[-1] if shape else None)
    if group == "conv":
        why = f"the spatial size of {name}'s output depends on the input's"
        return _Shape((m.out_channels, *[None] * len(m.kernel_size)), why=why)
    if group == "linear":
        if x.dims is None:
            return _Shape(last=m.out_features)
        return replace(x, dims=(*x.dims[:-1], m.out_features), exact=x.exact or len(x.dims) == 1)
    if group == "spatial":
        why = f"{name} sets a spatial size that depends on the input's"
        if x.dims is None:
            return _Shape(chan=x.chan, exact=x.exact, why=why)
        keep = x.dims[0] if len(x.dims) > 1 else None  # of [B, D], D is what they change
        return replace(x, dims=(keep, *[None] * (len(x.dims) - 1)), why=why)
    if group == "adaptive":
        n = int(_torch_class(m).__name__[-2])  # AdaptiveAvgPool2d -> 2
        ok = x.dims is not None and len(x.dims) == n + 1
        old = x.dims if ok else (x.chan if x.dims is None else None, *[None] * n)
        size = m.output_size
        size = tuple(size) if isinstance(size, tuple | list) else (size,) * n
        spatial = (o if o is not None else s for o, s in zip(size, old[1:], strict=False))
        return replace(x, dims=(old[0], *spatial), chan=None, last=None)
    if group == "flatten":
        return _flatten(m, x)
    width = _declared_width(m)
    if width is None:
        return _Shape(why=f"{name} has a forward of its own and no width attribute")
    return _Shape(chan=width, last=width, exact=False, why=f"{name}'s width is a guess")


def _flatten(m: nn.Flatten, x: _Shape) -> _Shape:
    if x.dims is None:
        return _Shape(exact=x.exact, why="Flatten is given a tensor of unknown rank")
    full = (None, *x.dims)  # with the batch dim
    start, end = m.start_dim % len(full), m.end_dim % len(full)
    if start == 0:
        return _Shape(why="Flatten merges the batch dim")
    merged = full[start : end + 1]
    size = None if None in merged else math.prod(merged)
    spatial = f"Flatten merges a {_fmt(x.dims)} map, whose spatial size depends on the input"
    why = spatial if x.dims[0] is not None else x.why  # unknown channels: what lost them
    return replace(x, dims=(*full[1:start], size, *full[end + 1 :]), why=why)


def _fmt(dims: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _demand(after: list[nn.Module], x: _Shape) -> tuple[int | None, int | None]:
    """(dim 1, last dim) of the tensor `x`, as the first module after it that takes it declares.

    Through pools and a Flatten, a Linear's in_features is the channels times the pooled size
    (known after an adaptive pool). 0, as a Lazy module has before it runs, declares nothing.
    """
    y = _Shape((None, *x.dims[1:])) if x.dims else _Shape()  # x, its channels left open
    moved, per_channel = False, None
    for m in _leaves(after):
        group = _group(m)
        if group == "keep":
            continue
        if per_channel is None and group in ("spatial", "adaptive"):
            y, moved = _step(m, y), True  # the channels pass through, the last dim does not
        elif per_channel is None and group == "flatten":
            if y.dims is None or None in y.dims[1:] or (m.start_dim, m.end_dim) != (1, -1):
                break
            per_channel = math.prod(y.dims[1:])
        elif group == "linear" and m.in_features:
            if per_channel is None:
                return None, None if moved else m.in_features
            return (None if m.in_features % per_channel else m.in_features // per_channel), None
        elif per_channel is None and group in ("conv", "norm"):
            names = ("in_channels", "num_features", "num_channels")
            chan = next((getattr(m, n) for n in names if hasattr(m, n)), None)
            shape = getattr(m, "normalized_shape", None)
            if chan or shape:  # LocalResponseNorm declares neither
                return chan or None, shape[-1] if shape and not moved else None
        else:
            break
    return None, None


_WIDTH_ATTRS = ("out_features", "out_channels", "num_features", "normalized_shape", "hidden_size")


def _declared_width(block: nn.Module) -> int | None:
    """The last width attribute among `block`'s modules in module order: a guess, right for
    most blocks with a forward of their own (a transformer block ends in a norm or a Linear)."""
    # side modules (an MoE router: Linear(D, h) -> Linear(h, E)) do not carry the block's output
    side = {
        id(m)
        for s in block.modules()
        if getattr(s, "ponder_side_module", False)
        for m in s.modules()
    }
    for module in reversed(list(block.modules())):
        if id(module) in side:
            continue
        for attr in _WIDTH_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, tuple) and value:
                value = value[-1]
            if isinstance(value, int) and value > 0:
                return value
    return None


def class_count(module: nn.Module, hint: str) -> int:
    """The classes a classifier predicts: its last nn.Linear's output width. `hint` says what
    the user can do when there is none."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UnsupportedModelError(
            f"cannot tell the class count of {type(module).__name__}: it holds no nn.Linear; {hint}"
        )
    return linears[-1].out_features
