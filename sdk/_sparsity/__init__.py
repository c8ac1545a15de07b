"""Activation sparsity (D2DMoE step 1): activation swaps, Hoyer-penalty fine-tuning, recording,
critical sparsity, and the sentence-encoder variant."""
