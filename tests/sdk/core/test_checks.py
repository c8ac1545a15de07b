"""Tests of ponder._core.checks: the one positive-number check of the sdk and the runtime."""

import math

import numpy as np
import pytest

from ponder._core.checks import positive
from ponder._core.errors import ConfigError
from ponder.runtime import CostModel


def test_positive_numbers_pass_as_floats():
    assert positive(2, "x") == 2.0 and isinstance(positive(2, "x"), float)
    assert positive(np.float32(0.5), "x") == 0.5


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, None, True, "2", [1, 2]])
def test_anything_else_is_refused_with_the_arguments_name(bad):
    with pytest.raises(ConfigError, match="budget must be a positive finite number"):
        positive(bad, "budget")


def test_the_sdk_and_the_runtime_use_it():
    with pytest.raises(ConfigError, match="power_w must be a positive finite number, got -2"):
        CostModel(2, stage_flops=(1.0, 1.0), power_w=-2)
    from ponder._calibration.metrics import cost_accuracy_curve

    with pytest.raises(ConfigError, match="full_cost must be a positive finite number"):
        cost_accuracy_curve(np.ones((2, 3)), np.ones((2, 3), bool), [1.0, 2.0], 0.0)
