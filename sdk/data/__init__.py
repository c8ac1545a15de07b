"""Offline data sets with fixed train / calibration / test splits (no network needed), and a
user's own labelled files (JSONL text, image folders, .npz arrays) split the same way."""

from ponder.data.datasets import (
    Split,
    Splits,
    batches,
    list_datasets,
    load_dataset,
    load_digits,
    load_mnist1d,
)
from ponder.data.docstrings import TextSplit, TextSplits, load_docstrings
from ponder.data.files import load_files, load_image_folder, load_jsonl, load_npz

__all__ = [
    "Split",
    "Splits",
    "TextSplit",
    "TextSplits",
    "batches",
    "list_datasets",
    "load_dataset",
    "load_digits",
    "load_docstrings",
    "load_files",
    "load_image_folder",
    "load_jsonl",
    "load_mnist1d",
    "load_npz",
]
