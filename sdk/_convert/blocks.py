"""Finding a backbone's blocks: the consecutive modules after which exits can be placed."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ponder._convert.surgery import get_module
from ponder._core.errors import UnsupportedModelError

# (container path suffix, family, default pooling) in the order they are tried.
_CONTAINERS = (
    ("encoder.layer", "bert", "cls"),  # BERT-like: BertModel.encoder.layer
    ("transformer.h", "gpt2", "last"),  # GPT-2-like inside a *For* wrapper
    ("transformer.layer", "bert", "cls"),  # DistilBERT: DistilBertModel.transformer.layer
    ("h", "gpt2", "last"),  # GPT2Model.h
    ("blocks", "vit", "cls"),  # timm ViT / DeiT
    ("encoder.layers", "encoder", "mean"),  # torchvision ViT, nn.TransformerEncoder
    ("layers", "generic", "mean"),
)


@dataclass(frozen=True)
class Blocks:
    paths: tuple[str, ...]  # dotted module path of each block, in execution order
    family: str  # "sequential", "bert", "gpt2", "vit", "encoder", "generic" or "user"
    pooling: str  # default pooling for heads after these blocks


def find_blocks(model: nn.Module, blocks: str | tuple[str, ...] | None = None) -> Blocks:
    """Blocks named by the user (a container path or explicit paths), else found by convention."""
    if isinstance(blocks, tuple):
        for path in blocks:
            get_module(model, path)
        return Blocks(tuple(blocks), "user", "avg")
    if isinstance(blocks, str):
        for suffix, family, pooling in _CONTAINERS:  # a container we know: its pooling
            if blocks == suffix or blocks.endswith("." + suffix):
                return Blocks(_children(model, blocks), family, pooling)
        return Blocks(_children(model, blocks), "user", "avg")
    for suffix, family, pooling in _CONTAINERS:
        for path, module in model.named_modules():
            if (path == suffix or path.endswith("." + suffix)) and _is_stack(module):
                return Blocks(_children(model, path), family, pooling)
    if isinstance(model, nn.Sequential) and len(model) >= 3:
        # the last child is the model's own head; exits can follow any child before it
        return Blocks(tuple(name for name, _ in model.named_children())[:-1], "sequential", "avg")
    raise UnsupportedModelError(_explain(model))


def _is_stack(module: nn.Module) -> bool:
    return isinstance(module, nn.ModuleList | nn.Sequential) and len(module) >= 2


def _children(model: nn.Module, path: str) -> tuple[str, ...]:
    container = get_module(model, path)
    prefix = f"{path}." if path else ""
    return tuple(prefix + name for name, _ in container.named_children())


def _explain(model: nn.Module) -> str:
    found = ", ".join(f"{name} ({type(m).__name__})" for name, m in model.named_children())
    return (
        f"cannot find the blocks of {type(model).__name__}: it is not an nn.Sequential of 3 or more "
        "children (blocks, then the model's own head), and it has "
        f"none of the containers {', '.join(c[0] for c in _CONTAINERS)}. Its children are: "
        f"{found or 'none'}. Name the blocks by hand: EarlyExitConfig(blocks='path.to.container') "
        f"for a ModuleList/Sequential of blocks, or blocks=('layer1', 'layer2', ...) for "
        f"explicit module paths in execution order."
    )
