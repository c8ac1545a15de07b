"""Changing a model: `convert_` and its converter registry, the one surgery helper, finding
blocks, train/eval modes, and checkpoints that rebuild a converted model."""
