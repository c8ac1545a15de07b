"""Tests of ponder._core.points: the one OperatingPoint type of the sdk, export and runtime."""

import math

import pytest

import ponder
import ponder.runtime
from ponder._core.errors import ConfigError
from ponder._core.points import OperatingPoint


def test_the_sdk_and_the_runtime_re_export_the_core_type():
    assert ponder.runtime.OperatingPoint is OperatingPoint is ponder.OperatingPoint


def test_accuracy_drop_is_written_only_when_known_and_unknown_keys_survive():
    row = {"name": "a", "thresholds": [0.5, None], "accuracy": 0.9, "source": "calib"}
    p = OperatingPoint.from_dict(row)
    assert p.thresholds == (0.5, math.inf) and p.accuracy_drop is None
    assert p.extra == {"source": "calib"}
    row = p.to_dict()
    assert "accuracy_drop" not in row and row["thresholds"] == [0.5, None]
    assert row["source"] == "calib"
    with_drop = OperatingPoint.from_dict({**row, "accuracy_drop": 0.01})
    assert with_drop.accuracy_drop == 0.01 and with_drop.extra == {"source": "calib"}
    assert OperatingPoint.from_dict(with_drop.to_dict()) == with_drop


def test_bad_points_are_refused():
    with pytest.raises(ConfigError, match="max_stage"):
        OperatingPoint("a", (0.5,), max_stage=-1)
    with pytest.raises(ConfigError, match="NaN"):
        OperatingPoint("a", (math.nan,))
