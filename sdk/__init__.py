"""ponder: make a PyTorch model adaptive — early exits, dynamic-k experts, calibrated thresholds.

Attributes are imported lazily so that `import ponder` stays cheap (no torch until needed, and
never executorch, onnxruntime or triton).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the feature package (or module) that exports it
_LAZY = {
    # errors
    "PonderError": "_core",
    "ConfigError": "_core",
    "UnsupportedModelError": "_core",
    "CheckpointError": "_core",
    "BundleError": "_core",
    "PayloadError": "_core",
    "ExportMismatchError": "_core",
    "MissingDependencyError": "_core",
    "InternalError": "_core",
    "NoEffectWarning": "_core",
    # conversion
    "convert_": "_convert",
    "list_conversions": "_convert",
    "EarlyExitConfig": "_early_exit",
    "MoEConfig": "_moe",
    "SplitConfig": "_split",
    "split_link": "_split",
    "split_model": "_split",
    "SplitModel": "_split",
    "bytes_per_sample": "_split",
    "set_gate_": "_moe",
    "all_experts": "_moe",
    "expert_counts": "_moe",
    "list_gates": "_moe",
    "train_routers": "_moe",
    # activation sparsity (D2DMoE step 1)
    "find_activations": "_sparsity",
    "swap_activation_": "_sparsity",
    "activation_sparsity": "_sparsity",
    "sparsify_finetune": "_sparsity",
    "ActivationRecorder": "_sparsity",
    "hoyer_penalty": "_sparsity",
    "sparsify_text_encoder": "_sparsity",
    "compare_sparsity": "_sparsity",
    "SparsityComparison": "_sparsity",
    # running
    "infer": "_early_exit",
    "exit_outputs": "_early_exit",
    "AdaptiveResult": "_early_exit",
    "ExitOutputs": "_early_exit",
    "exit_rule": "_core",
    "list_exit_rules": "_core",
    # training, cost, evaluation, calibration
    "train_exits": "_early_exit",
    "TrainConfig": "_early_exit",
    "count_costs": "_early_exit",
    "ExitCosts": "_early_exit",
    "exit_data": "_calibration",
    "ExitData": "_calibration",
    "evaluate": "_calibration",
    "calibrate": "_calibration",
    "operating_points": "_calibration",
    "OperatingPoint": "_core",
    "thresholds_for_budget": "_calibration",
    "RiskControlResult": "_calibration",
    # checkpoints
    "save": "_convert",
    "load": "_convert",
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
