"""`convert_`: the one verb that turns a model adaptive, dispatching on the config's type."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from ponder._core.config import Config
from ponder._core.errors import ConfigError, NoEffectWarning
from ponder._core.registry import Registry

# handler(model, config, example_inputs) -> True if it changed the model
CONVERTERS: Registry[Callable[[nn.Module, Any, Any], bool]] = Registry("conversion")
# modules that register the built-in converters, imported on first use (they import torch)
_BUILTIN = ("ponder._early_exit.config", "ponder._moe.config", "ponder._split.config")
LOG_ATTR = "_ponder_conversions"  # configs applied to a model, in order (saved in checkpoints)


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def convert_(model: nn.Module, config: Config, *, example_inputs: Any = None) -> nn.Module:
    """Convert `model` in place as `config` says and return it.

    Converting twice with the same config changes nothing; a conversion that changes nothing
    emits `ponder.NoEffectWarning`. `example_inputs` (a tensor or a dict of keyword tensors)
    lets ponder read shapes from a dry run instead of from module attributes.
    """
    if not isinstance(config, Config):
        raise ConfigError(
            f"convert_ takes a ponder config such as EarlyExitConfig(...), got {type(config).__name__}"
        )
    _load_builtin()
    changed = CONVERTERS.get(config.kind)(model, config, example_inputs)
    if changed:
        log_conversion(model, config)
    else:
        warnings.warn(
            f"{config.kind} conversion changed nothing on {type(model).__name__}",
            NoEffectWarning,
            stacklevel=2,
        )
    return model


def list_conversions() -> list[str]:
    _load_builtin()
    return CONVERTERS.names()


def log_conversion(model: nn.Module, config: Config) -> None:
    """Remember that `config` was applied to `model` (checkpoints replay the log on load)."""
    model.__dict__.setdefault(LOG_ATTR, []).append(config)


def conversions(model: nn.Module) -> list[Config]:
    """The configs applied to `model`, in the order they were applied."""
    return list(model.__dict__.get(LOG_ATTR, []))
