"""The torch-free core every layer may import: the error family, registries, configs, exit
rules, operating points, argument checks, result tables and plotting helpers."""

from ponder._core.checks import positive
from ponder._core.config import Config
from ponder._core.errors import (
    BundleError,
    CheckpointError,
    ConfigError,
    ExportMismatchError,
    InternalError,
    MissingDependencyError,
    NoEffectWarning,
    PayloadError,
    PonderError,
    UnsupportedModelError,
)
from ponder._core.points import OperatingPoint
from ponder._core.registry import Registry
from ponder._core.rules import ExitRule, exit_rule, list_exit_rules

__all__ = [
    "BundleError",
    "CheckpointError",
    "Config",
    "ConfigError",
    "ExitRule",
    "ExportMismatchError",
    "InternalError",
    "MissingDependencyError",
    "NoEffectWarning",
    "OperatingPoint",
    "PayloadError",
    "PonderError",
    "Registry",
    "UnsupportedModelError",
    "exit_rule",
    "list_exit_rules",
    "positive",
]
