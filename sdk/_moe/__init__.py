"""D2DMoE: dense FFNs found and split into experts, gates, router training, and the `MoEConfig`
conversion that puts a dynamic-k mixture in place of each FFN."""
