"""Offline data sets with fixed, seeded, stratified train/calib/test splits (60/20/20).

Nothing here touches the network: digits ships with scikit-learn, MNIST-1D is generated locally.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ponder._convert.calls import Inputs, take
from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.data.docstrings import TextSplits, load_docstrings

__all__ = [
    "Split",
    "Splits",
    "batches",
    "list_datasets",
    "load_dataset",
    "load_digits",
    "load_mnist1d",
]

_FRACTIONS = (0.6, 0.2, 0.2)  # train, calib, test
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One part of a data set: labels `y` [N] int64 and inputs `x`, a tensor [N, ...] (float32
    for the built-in sets) or, for transformers models, a dict of keyword tensors with N rows
    each (tokenized text: input_ids and attention_mask [N, T] int64)."""

    x: Inputs
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """The three fixed parts of a data set and what a model needs to know about it."""

    train: Split
    calib: Split
    test: Split
    name: str
    num_classes: int
    input_shape: tuple
    classes: tuple[str, ...] = ()  # class names by index, when the data named them


def _stratified_indices(
    y: np.ndarray, seed: int, fractions: tuple[float, float, float] = _FRACTIONS
) -> tuple[np.ndarray, ...]:
    """Split the indices of `y` (60/20/20 by default) within each class; the same seed gives
    the same split."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_train = round(fractions[0] * len(idx))
        n_calib = round(fractions[1] * len(idx))
        for part, chunk in zip(parts, np.split(idx, [n_train, n_train + n_calib]), strict=True):
            part.append(chunk)
    # sorted, so every split keeps the source order (which already mixes the classes)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def _make_splits(x: np.ndarray, y: np.ndarray, seed: int, name: str) -> Splits:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    train, calib, test = (Split(xt[i], yt[i]) for i in _stratified_indices(y, seed))
    return Splits(
        train=train,
        calib=calib,
        test=test,
        name=name,
        num_classes=int(y.max()) + 1,
        input_shape=tuple(x.shape[1:]),
    )


def load_digits(seed: int = 0) -> Splits:
    """scikit-learn's 1,797 handwritten 8×8 digits as float32 [N, 1, 8, 8] in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise MissingDependencyError("scikit-learn", "train", "The digits data set") from e
    data = sk_load_digits()
    x = (data.images / 16.0).reshape(-1, 1, 8, 8)  # pixel values are 0..16
    return _make_splits(x, data.target, seed, "digits")


def _cache_dir() -> Path:
    return Path(os.environ.get("PONDER_CACHE_DIR", "~/.cache/ponder")).expanduser()


def _mnist1d_version() -> str:
    """The installed mnist1d version, read without importing it (that takes 0.6 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist1d")
    except PackageNotFoundError as e:
        raise MissingDependencyError("mnist1d", "train", "The MNIST-1D data set") from e


def _generate_mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole MNIST-1D pool ([N, 40] float64, [N] int), leaving the global RNGs untouched."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise MissingDependencyError("mnist1d", "train", "The MNIST-1D data set") from e
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset only computes (no download) but reseeds `random` and `np.random` globally.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    # make_dataset splits 80/20 itself; we pool the two parts and re-split 60/20/20 ourselves.
    return np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]])


def load_mnist1d(num_samples: int = 12000, seed: int = 0, cache: bool = True) -> Splits:
    """MNIST-1D (Greydanus 2020) generated locally: float32 [N, 1, 40], 10 balanced classes.

    The pool has `num_samples` rounded down to a multiple of 10 (equal classes); `seed` fixes
    both the pool and its split. Generating takes about 0.2 ms a sample
    (2.4 s for 12k, 7.9 s for 40k on a 2-core CPU), so with `cache` the pool is kept in
    `~/.cache/ponder/` (or `$PONDER_CACHE_DIR`), keyed on (num_samples, seed, mnist1d version).
    """
    if num_samples < 100:
        raise ConfigError(
            f"num_samples={num_samples} is too small for three stratified splits of 10 classes; "
            "use at least 100 (the default is 12000)."
        )
    path = _cache_dir() / f"mnist1d-n{num_samples}-s{seed}-v{_mnist1d_version()}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    else:
        x, y = _generate_mnist1d(num_samples, seed)
        x = x.astype(np.float32)
        if cache:
            _save_atomic(path, x, y)
    return _make_splits(x[:, None, :], y, seed, "mnist1d")  # [N, 40] -> [N, 1, 40]


def _save_atomic(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write the cache so that a reader (or a parallel writer) never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    except OSError as e:  # a read-only home only costs regenerating next time
        _log.warning("Could not cache MNIST-1D at %s (%s); it will be generated again.", path, e)


# docstrings is raw text (TextSplits): its model tokenizes it (TextSplits.tokenize)
_DATASETS: dict[str, Callable[..., Splits | TextSplits]] = {
    "digits": load_digits,
    "docstrings": load_docstrings,
    "mnist1d": load_mnist1d,
}


def list_datasets() -> list[str]:
    """The names `load_dataset` accepts."""
    return sorted(_DATASETS)


def load_dataset(name: str, **kwargs) -> Splits | TextSplits:
    """Load a registered data set by name; keyword arguments go to its loader. Text data sets
    ("docstrings") come as raw texts (`TextSplits`), the others as tensors (`Splits`)."""
    loader = _DATASETS.get(name)
    if loader is None:
        raise ConfigError(
            f"Unknown data set {name!r}; known data sets: {', '.join(list_datasets())}."
        )
    return loader(**kwargs)


def batches(
    split: Split, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[Inputs, torch.Tensor]]:
    """Iterate over (x, y) minibatches by slicing the tensors (much cheaper than a DataLoader).

    The last batch may be smaller. With `shuffle`, the order is a permutation fixed by `seed`.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    n = len(split)
    if not shuffle:
        return (
            (take(split.x, slice(i, i + batch_size)), split.y[i : i + batch_size])
            for i in range(0, n, batch_size)
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    chunks = (order[i : i + batch_size] for i in range(0, n, batch_size))
    return ((take(split.x, idx), split.y[idx]) for idx in chunks)
