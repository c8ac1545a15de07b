"""Argument checks shared by every layer; each failure is a ConfigError that names the argument."""

from __future__ import annotations

import math
from typing import Any

from ponder._core.errors import ConfigError

__all__ = ["positive"]


def positive(value: Any, name: str) -> float:
    """`value` as a float; ConfigError unless it is a positive finite number (a bool or a string
    is not a number here)."""
    try:
        v = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not 0 < v < math.inf:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return v
