"""`check_inputs` on a two-input (text) bundle's specs: the branches that only a bundle with more
than one input can reach."""

from __future__ import annotations

import numpy as np
import pytest

from ponder.runtime import InputError, TensorSpec
from ponder.runtime._engine.inputs import check_inputs

SPECS = [
    TensorSpec("input_ids", "int64", ("batch", "tokens")),
    TensorSpec("attention_mask", "int64", ("batch", "tokens")),
]


def _ids(rows: int) -> np.ndarray:
    return np.ones((rows, 7), dtype=np.int64)


def test_two_inputs_are_checked_and_returned_by_name():
    got = check_inputs(SPECS, {"attention_mask": _ids(3), "input_ids": _ids(3)}, max_batch=None)
    assert list(got) == ["input_ids", "attention_mask"]  # in the bundle's order
    assert all(a.shape == (3, 7) and a.dtype == np.int64 for a in got.values())


def test_one_array_for_a_two_input_bundle_asks_for_a_dict():
    with pytest.raises(
        InputError, match=r"takes 2 inputs \['input_ids', 'attention_mask'\]; pass a dict"
    ):
        check_inputs(SPECS, _ids(3), max_batch=None)


def test_inputs_must_agree_on_the_batch_size():
    with pytest.raises(
        InputError,
        match=r"disagree on the batch size: 'attention_mask' has 2 rows, an earlier input 3",
    ):
        check_inputs(SPECS, {"input_ids": _ids(3), "attention_mask": _ids(2)}, max_batch=None)
