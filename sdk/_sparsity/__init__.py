"""Activation sparsity (D2DMoE step 1): activation swaps, Hoyer-penalty fine-tuning, recording,
critical sparsity, and the sentence-encoder variant."""

from ponder._sparsity.finetune import (
    ActivationRecorder,
    activation_sparsity,
    find_activations,
    hoyer_penalty,
    sparsify_finetune,
    swap_activation_,
)
from ponder._sparsity.text import SparsityComparison, compare_sparsity, sparsify_text_encoder

__all__ = [
    "ActivationRecorder",
    "SparsityComparison",
    "activation_sparsity",
    "compare_sparsity",
    "find_activations",
    "hoyer_penalty",
    "sparsify_finetune",
    "sparsify_text_encoder",
    "swap_activation_",
]
