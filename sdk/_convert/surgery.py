"""The one place where ponder changes a model's module tree; every change returns what it replaced."""

from __future__ import annotations

from torch import nn

from ponder._core.errors import ConfigError


def get_module(root: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path` ('' is the root), with a clear error when it is missing."""
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ConfigError(
            f"the model has no submodule {path!r}; names it does have start with: "
            f"{', '.join(name for name, _ in list(root.named_children())[:12])}"
        ) from None


def replace_module(root: nn.Module, path: str, new: nn.Module | None) -> nn.Module | None:
    """Put `new` at dotted `path` (None removes it); returns the module that was there, or None."""
    parent_path, _, name = path.rpartition(".")
    parent = get_module(root, parent_path)
    old = parent._modules.get(name)
    if new is None:
        parent._modules.pop(name, None)
    else:
        parent.add_module(name, new)
    return old


SIDECARS = (
    "ponder_exits",
    "ponder_split",
)  # attached modules that are not part of the model's own forward


def attach_sidecar(model: nn.Module, name: str, module: nn.Module) -> nn.Module | None:
    """Attach `module` as `model.<name>` so it moves and saves with the model but never runs as
    part of the model's own forward. Returns what was there before.

    An nn.Sequential runs every child it holds, so a Sequential model gets its class swapped
    for a subclass that skips sidecars (the way torch.nn.utils.parametrize swaps classes).
    """
    if name not in SIDECARS:
        raise ValueError(f"{name!r} is not a registered sidecar name")
    if isinstance(model, nn.Sequential) and not isinstance(model, _SkipSidecars):
        model.__class__ = _skipping_class(type(model))
    return replace_module(model, name, module)


class _SkipSidecars:
    """Mixin for nn.Sequential subclasses: forward, len, iteration and indexing skip sidecars."""

    def _main(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self._modules.items() if n not in SIDECARS]

    def forward(self, input):
        for _, module in self._main():
            input = module(input)
        return input

    def __len__(self) -> int:
        return len(self._main())

    def __iter__(self):
        return iter([m for _, m in self._main()])

    def __getitem__(self, idx):
        items = self._main()
        if isinstance(idx, slice):
            return nn.Sequential(dict(items[idx]))
        return items[idx][1]


def sequential_links(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The (name, child) pairs an nn.Sequential feeds one into the next, sidecars left out; None
    for any other module (its forward decides what runs)."""
    if type(module).forward not in (nn.Sequential.forward, _SkipSidecars.forward):
        return None
    return [(n, m) for n, m in module.named_children() if n not in SIDECARS]


_SKIPPING: dict[type, type] = {}


def _skipping_class(cls: type) -> type:
    if cls not in _SKIPPING:
        _SKIPPING[cls] = type(cls.__name__, (_SkipSidecars, cls), {"__module__": cls.__module__})
    return _SKIPPING[cls]
