"""`EarlyExitConfig` and its conversion: exit heads after chosen blocks of any backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ponder._convert.blocks import find_blocks
from ponder._convert.calls import call_model
from ponder._convert.convert import CONVERTERS
from ponder._convert.modes import kept_modes
from ponder._convert.surgery import attach_sidecar, get_module
from ponder._core.config import Config, check_choice
from ponder._core.errors import ConfigError
from ponder._early_exit.heads import Pool
from ponder._early_exit.infer import final_logits
from ponder._early_exit.stack import ATTR, ExitStack
from ponder._early_exit.widths import class_count, head_width

HEADS = ("linear", "mlp")
STYLES = ("sdn", "ztw")


@dataclass(frozen=True)
class EarlyExitConfig(Config):
    """Where to put exits and what they look like.

    exits: block indices after which an exit head goes (None: `num_exits` evenly spaced).
    blocks: a container path ("features") or explicit block paths; None finds them.
    head: "linear" or "mlp" (hidden width `head_hidden`, 0 = the feature width).
    style: "sdn" (independent heads) or "ztw" (cascading heads plus a learned ensemble).
    pooling: "auto" (by model family; for blocks named in `blocks` outside a known family, by
    what they return when example_inputs are given: "mean" for tokens [B, T, D], else "avg"),
    "avg" (feature maps), "cls", "mean", "last" (tokens).
    """

    kind = "early_exit"
    exits: tuple[int, ...] | None = None
    num_exits: int = 4
    blocks: str | tuple[str, ...] | None = None
    head: str = "linear"
    head_hidden: int = 0
    style: str = "ztw"
    pooling: str = "auto"
    num_classes: int | None = None

    def __post_init__(self):
        check_choice("head", self.head, HEADS)
        check_choice("style", self.style, STYLES)
        check_choice("pooling", self.pooling, ("auto", "avg", "cls", "mean", "last", "none"))
        if self.num_exits < 0 or self.head_hidden < 0:
            raise ConfigError("num_exits and head_hidden must be >= 0")
        if self.exits is not None and list(self.exits) != sorted(set(self.exits)):
            raise ConfigError(f"exits must be increasing block indices, got {self.exits}")
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))


def attach_exits(model: nn.Module, config: EarlyExitConfig, spec: dict[str, Any]) -> ExitStack:
    """Build the exit stack described by a resolved `spec` and hook it into `model`."""
    stack = ExitStack(config, spec)
    param = next(model.parameters(), None)
    if param is not None:
        stack.to(param.device)
    attach_sidecar(model, ATTR, stack)
    stack.attach(model)
    return stack


@CONVERTERS.register("early_exit")
def _convert(model: nn.Module, config: EarlyExitConfig, example_inputs: Any) -> bool:
    existing = getattr(model, ATTR, None)
    if existing is not None:
        if existing.config == config:
            return False
        raise ConfigError(
            "this model already has early exits from a different config "
            f"({existing.config}); convert a fresh copy of the model instead"
        )
    if config.exits == () or (config.exits is None and config.num_exits == 0):
        return False
    from ponder._split.link import ATTR as SPLIT  # imports the exit stack: not at the top

    if getattr(model, SPLIT, None) is not None:
        # the link must see which rows left at a device-side exit: its hook has to come after
        raise ConfigError(
            "this model already has an edge-cloud split; add the exits first, then the split "
            "(ponder.convert_ with EarlyExitConfig, then with SplitConfig)"
        )
    attach_exits(model, config, resolve_spec(model, config, example_inputs))
    return True


def resolve_spec(model: nn.Module, config: EarlyExitConfig, example_inputs: Any) -> dict[str, Any]:
    """Blocks, exit positions, feature widths and class count as plain JSON values."""
    blocks = find_blocks(model, config.blocks)
    exits = _exit_positions(config, len(blocks.paths))
    pooling = blocks.pooling if config.pooling == "auto" else config.pooling
    paths = [blocks.paths[b] for b in exits]
    if example_inputs is not None:
        # blocks the user named: "avg" suits feature maps; tokens [B, T, D] are averaged over T
        by_shape = config.pooling == "auto" and blocks.family == "user"
        widths, classes, pooling = _dry_run(model, paths, pooling, example_inputs, by_shape)
    else:
        widths = [head_width(model, p, pooling) for p in paths]
        classes = class_count(
            model,
            "set EarlyExitConfig(num_classes=...) or pass example_inputs=... to ponder.convert_",
        )
    return {
        "block_paths": list(blocks.paths),
        "family": blocks.family,
        "exit_blocks": list(exits),
        "widths": widths,
        "classes": config.num_classes or classes,
        "pooling": pooling,
    }


def _exit_positions(config: EarlyExitConfig, n_blocks: int) -> tuple[int, ...]:
    last = n_blocks - 2  # an exit after the last block would duplicate the model's own head
    if config.exits is not None:
        if config.exits[0] < 0 or config.exits[-1] > last:
            raise ConfigError(f"exits must lie in 0..{last} for a model with {n_blocks} blocks")
        return config.exits
    if config.num_exits > last + 1:
        raise ConfigError(f"num_exits={config.num_exits} but only {last + 1} places exist")
    spaced = (
        round(j * n_blocks / (config.num_exits + 1)) - 1 for j in range(1, config.num_exits + 1)
    )
    return tuple(sorted({min(max(b, 0), last) for b in spaced}))


@torch.no_grad()
def _dry_run(
    model: nn.Module, paths: list[str], pooling: str, example_inputs: Any, by_shape: bool = False
) -> tuple[list[int], int, str]:
    """(head input widths, class count, pooling): one forward pass of `example_inputs`; with
    `by_shape`, the pooling follows what the first exit block returns ("mean" for tokens
    [B, T, D], else `pooling`)."""
    hiddens: dict[str, torch.Tensor] = {}

    def grab(path: str):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple | list) else output
            hiddens[path] = hidden.detach()

        return hook

    handles = [get_module(model, p).register_forward_hook(grab(p)) for p in paths]
    try:
        with kept_modes(model, eval_now=True):
            classes = int(final_logits(call_model(model, example_inputs)).shape[-1])
    finally:
        for h in handles:
            h.remove()
    if by_shape and paths and hiddens[paths[0]].dim() == 3:
        pooling = "mean"
    pool = Pool(pooling)
    return [int(pool(hiddens[p]).shape[-1]) for p in paths], classes, pooling
