"""D2DMoE: dense FFNs found and split into experts, gates, router training, and the `MoEConfig`
conversion that puts a dynamic-k mixture in place of each FFN."""

from ponder._moe.config import MoEConfig, all_experts, expert_counts, set_gate_
from ponder._moe.gates import list_gates
from ponder._moe.router import train_routers

__all__ = ["MoEConfig", "all_experts", "expert_counts", "list_gates", "set_gate_", "train_routers"]
