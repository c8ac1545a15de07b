"""ponder: make a PyTorch model adaptive — early exits, dynamic-k experts, calibrated thresholds.

Attributes are imported lazily so that `import ponder` stays cheap (no torch until needed, and
never executorch, onnxruntime or triton).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> private module that defines it
_LAZY = {
    # errors
    "PonderError": "_core.errors",
    "ConfigError": "_core.errors",
    "UnsupportedModelError": "_core.errors",
    "CheckpointError": "_core.errors",
    "BundleError": "_core.errors",
    "ExportMismatchError": "_core.errors",
    "MissingDependencyError": "_core.errors",
    "InternalError": "_core.errors",
    "NoEffectWarning": "_core.errors",
    # conversion
    "convert_": "_convert.convert",
    "list_conversions": "_convert.convert",
    "EarlyExitConfig": "_early_exit.config",
    "MoEConfig": "_moe.config",
    "set_gate_": "_moe.config",
    "all_experts": "_moe.config",
    "expert_counts": "_moe.config",
    "list_gates": "_moe.gates",
    "train_routers": "_moe.router",
    # activation sparsity (D2DMoE step 1)
    "find_activations": "_sparsity.finetune",
    "swap_activation_": "_sparsity.finetune",
    "activation_sparsity": "_sparsity.finetune",
    "sparsify_finetune": "_sparsity.finetune",
    "ActivationRecorder": "_sparsity.finetune",
    "hoyer_penalty": "_sparsity.finetune",
    # running
    "infer": "_early_exit.infer",
    "exit_outputs": "_early_exit.infer",
    "AdaptiveResult": "_early_exit.infer",
    "ExitOutputs": "_early_exit.infer",
    "exit_rule": "_core.rules",
    "list_exit_rules": "_core.rules",
    # training, cost, evaluation, calibration
    "train_exits": "_early_exit.train",
    "TrainConfig": "_early_exit.train",
    "count_costs": "_early_exit.flops",
    "ExitCosts": "_early_exit.flops",
    "exit_data": "_calibration.evaluate",
    "ExitData": "_calibration.evaluate",
    "evaluate": "_calibration.evaluate",
    "calibrate": "_calibration.evaluate",
    "operating_points": "_calibration.evaluate",
    "thresholds_for_budget": "_calibration.thresholds",
    "RiskControlResult": "_calibration.thresholds",
    # checkpoints
    "save": "_convert.checkpoint",
    "load": "_convert.checkpoint",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ponder.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from ponder._core.errors import *  # noqa: F403
