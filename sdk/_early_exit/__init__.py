"""Early exits: `EarlyExitConfig`, the exit stack and heads (ZTW cascade and ensemble), per-forward
runs, adaptive inference with batch shrinking, exit training and FLOPs per exit."""

from ponder._early_exit.config import EarlyExitConfig
from ponder._early_exit.flops import ExitCosts, count_costs
from ponder._early_exit.infer import AdaptiveResult, ExitOutputs, exit_outputs, infer
from ponder._early_exit.train import TrainConfig, train_exits

__all__ = [
    "AdaptiveResult",
    "EarlyExitConfig",
    "ExitCosts",
    "ExitOutputs",
    "TrainConfig",
    "count_costs",
    "exit_outputs",
    "infer",
    "train_exits",
]
