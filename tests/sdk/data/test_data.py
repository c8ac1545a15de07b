"""Offline data sets: split sizes, disjointness, determinism, dtypes and the registry."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

import ponder
from ponder.data import datasets as _data

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits() -> _data.Splits:
    return _data.load_digits(seed=0)


def _sizes(s: _data.Splits) -> tuple[int, int, int]:
    return len(s.train), len(s.calib), len(s.test)


def test_digits_sizes_dtype_and_range(digits):
    assert sum(_sizes(digits)) == 1797
    assert _sizes(digits) == pytest.approx((0.6 * 1797, 0.2 * 1797, 0.2 * 1797), abs=6)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.name == "digits"
    for split in (digits.train, digits.calib, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.shape[0] == len(split)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert set(split.y.tolist()) == set(range(10))  # stratified: every class in every split


def test_stratified_indices_are_disjoint_and_cover_everything():
    y = np.repeat(np.arange(10), 37)
    parts = _data._stratified_indices(y, seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and len(np.unique(joined)) == len(y)
    for part in parts:
        assert set(np.bincount(y[part], minlength=10)) <= {7, 8, 22, 23}  # per class 22/7/8


def test_digits_splits_are_disjoint_index_sets(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    parts = _data._stratified_indices(raw.target, seed=0)
    assert not set(parts[0]) & set(parts[1]) and not set(parts[0]) & set(parts[2])
    assert not set(parts[1]) & set(parts[2])
    for split, idx in zip((digits.train, digits.calib, digits.test), parts, strict=True):
        expected = torch.from_numpy(raw.images[idx] / 16.0).float().unsqueeze(1)
        torch.testing.assert_close(split.x, expected, rtol=0, atol=0)
        assert split.y.tolist() == raw.target[idx].tolist()


def test_digits_deterministic_per_seed(digits):
    again, other = _data.load_digits(seed=0), _data.load_digits(seed=1)
    torch.testing.assert_close(again.test.x, digits.test.x, rtol=0, atol=0)
    assert torch.equal(again.train.y, digits.train.y)
    assert not torch.equal(other.test.x, digits.test.x)


def test_mnist1d_small_pool(tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path))
    state = np.random.get_state()[1].copy(), random.getstate()
    s = _data.load_mnist1d(num_samples=500, seed=0)
    assert (np.random.get_state()[1] == state[0]).all() and random.getstate() == state[1]
    assert _sizes(s) == (300, 100, 100)
    assert s.input_shape == (1, 40) and s.num_classes == 10 and s.name == "mnist1d"
    assert s.train.x.dtype == torch.float32 and s.train.x.shape == (300, 1, 40)
    assert len(list(tmp_path.glob("mnist1d-n500-s0-*.npz"))) == 1
    cached = _data.load_mnist1d(num_samples=500, seed=0)  # read back from the cache
    torch.testing.assert_close(cached.test.x, s.test.x, rtol=0, atol=0)
    fresh = _data.load_mnist1d(num_samples=500, seed=0, cache=False)
    torch.testing.assert_close(fresh.test.x, s.test.x, rtol=0, atol=0)


def test_mnist1d_rejects_tiny_pool():
    with pytest.raises(ponder.ConfigError, match="at least 100"):
        _data.load_mnist1d(num_samples=20)


def test_registry_lists_and_rejects_unknown_names():
    assert _data.list_datasets() == ["digits", "docstrings", "mnist1d"]
    assert _data.load_dataset("digits", seed=0).name == "digits"
    with pytest.raises(ponder.ConfigError, match="known data sets: digits, docstrings, mnist1d"):
        _data.load_dataset("cifar10")
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        _data.load_dataset("")


def test_batches_cover_split_once(digits):
    split = digits.calib
    seen = [y for _, y in _data.batches(split, 100)]
    assert [len(y) for y in seen] == [100, 100, 100, len(split) - 300]
    assert torch.equal(torch.cat(seen), split.y)
    shuffled = torch.cat([y for _, y in _data.batches(split, 64, shuffle=True, seed=1)])
    assert not torch.equal(shuffled, split.y)
    assert torch.equal(shuffled.sort().values, split.y.sort().values)
    again = torch.cat([y for _, y in _data.batches(split, 64, shuffle=True, seed=1)])
    assert torch.equal(again, shuffled)
    with pytest.raises(ponder.ConfigError, match="batch_size"):
        _data.batches(split, 0)


def test_mnist1d_missing_dependency_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d...` fail
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ponder.MissingDependencyError, match=r"pip install 'ponder\[train\]'"):
        _data.load_mnist1d(num_samples=100, cache=False)
