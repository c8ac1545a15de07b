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


def test_dict_access_of_earlier_releases_still_works_with_a_warning():
    point = OperatingPoint(
        "shared threshold 0.9",
        (0.9, 0.9),
        accuracy=0.97,
        flops_fraction=0.4,
        exit_fractions=(0.5, 0.3, 0.2),
        accuracy_drop=0.01,
    )
    with pytest.warns(
        DeprecationWarning, match=r"point.thresholds instead of point\['threshold'\]"
    ):
        assert point["threshold"] == 0.9
    with pytest.warns(DeprecationWarning):
        assert point["accuracy"] == 0.97 and point["exit_fractions"] == [0.5, 0.3, 0.2]
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        point["name"]
    per_exit = OperatingPoint("per exit", (0.8, 0.9))
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError, match="one threshold per exit"):
        per_exit["threshold"]
