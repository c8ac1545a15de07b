"""Offline data sets with fixed train / calibration / test splits (no network needed)."""

from ponder.data.datasets import (
    Split,
    Splits,
    batches,
    list_datasets,
    load_dataset,
    load_digits,
    load_mnist1d,
)

__all__ = [
    "Split",
    "Splits",
    "batches",
    "list_datasets",
    "load_dataset",
    "load_digits",
    "load_mnist1d",
]
