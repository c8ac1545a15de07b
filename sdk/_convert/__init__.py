"""Changing a model: `convert_` and its converter registry, the one surgery helper, finding
blocks, train/eval modes, and checkpoints that rebuild a converted model."""

from ponder._convert.checkpoint import load, save
from ponder._convert.convert import convert_, list_conversions

__all__ = ["convert_", "list_conversions", "load", "save"]
