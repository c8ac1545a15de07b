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
    "PonderError": "_errors",
    "ConfigError": "_errors",
    "UnsupportedModelError": "_errors",
    "CheckpointError": "_errors",
    "BundleError": "_errors",
    "ExportMismatchError": "_errors",
    "MissingDependencyError": "_errors",
    "InternalError": "_errors",
    "NoEffectWarning": "_errors",
    # conversion
    "convert_": "_convert",
    "list_conversions": "_convert",
    "EarlyExitConfig": "_early_exit",
    "MoEConfig": "_moe",
    "set_gate_": "_moe",
    "all_experts": "_moe",
    "expert_counts": "_moe",
    "list_gates": "_moe_gates",
    "train_routers": "_moe_router",
    # activation sparsity (D2DMoE step 1)
    "find_activations": "_sparsify",
    "swap_activation_": "_sparsify",
    "activation_sparsity": "_sparsify",
    "sparsify_finetune": "_sparsify",
    "ActivationRecorder": "_sparsify",
    "hoyer_penalty": "_sparsify",
    # running
    "infer": "_infer",
    "exit_outputs": "_infer",
    "AdaptiveResult": "_infer",
    "ExitOutputs": "_infer",
    "exit_rule": "_rules",
    "list_exit_rules": "_rules",
    # training, cost, evaluation, calibration
    "train_exits": "_train",
    "TrainConfig": "_train",
    "count_costs": "_flops",
    "ExitCosts": "_flops",
    "exit_data": "_evaluate",
    "ExitData": "_evaluate",
    "evaluate": "_evaluate",
    "calibrate": "_evaluate",
    "operating_points": "_evaluate",
    "thresholds_for_budget": "_calibrate",
    "RiskControlResult": "_calibrate",
    # checkpoints
    "save": "_checkpoint",
    "load": "_checkpoint",
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
    from ponder._errors import *  # noqa: F403
