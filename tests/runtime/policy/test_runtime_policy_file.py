"""The policy file: the documented example parses, TOML and JSON round trips, and every
validation error names what is wrong."""

from __future__ import annotations

import json
import re
import sys

import pytest

from ponder import ConfigError
from ponder.runtime import PolicyRule, PolicySpec, load_policy
from ponder.runtime._policy import spec as _policy_file


def _example() -> str:
    return re.search(r"```toml\n(.*?)```", _policy_file.__doc__, flags=re.S).group(1)


def test_the_documented_example_parses(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(_example())
    spec = load_policy(path)
    assert spec.default == PolicyRule("default", latency_ms=50)
    assert [r.name for r in spec.rules] == ["plenty of battery", "low battery"]
    low = spec.rules[1]
    assert (low.battery_below, low.charging, low.energy_fraction) == (20, False, 0.5)
    assert spec.battery_band == 2 and spec.accuracy_margin == 0.005 and spec.needs_energy


def test_round_trip_through_dict_json_and_toml(tmp_path):
    spec = PolicySpec(
        default=PolicyRule(latency_ms=40, min_accuracy=0.8),
        rules=(
            PolicyRule("hot", temperature_above=70, latency_ms=80),
            PolicyRule("mid battery", battery_above=20, battery_below=50, energy_mj=3.5),
        ),
        battery_band=3,
        min_requests=5,
    )
    assert PolicySpec.from_dict(spec.to_dict()) == spec
    (tmp_path / "p.json").write_text(json.dumps(spec.to_dict()))
    assert load_policy(tmp_path / "p.json") == spec
    toml = """
        [hysteresis]
        battery_band = 3
        min_requests = 5
        [default]
        latency_ms = 40
        min_accuracy = 0.8
        [[rule]]
        name = "hot"
        when = { temperature_above = 70 }
        latency_ms = 80
        [[rule]]
        name = "mid battery"
        when = { battery_above = 20, battery_below = 50 }
        energy_mj = 3.5
    """
    (tmp_path / "p.toml").write_text("\n".join(line.strip() for line in toml.splitlines()))
    assert load_policy(tmp_path / "p.toml") == spec


def test_simple_spec_for_the_cli():
    spec = PolicySpec.simple(latency_ms=25)
    assert spec.default.latency_ms == 25 and spec.default.energy_mj is None and not spec.rules
    assert PolicySpec.from_dict({}) == PolicySpec()


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (
            {"rules": []},
            "unknown key 'rules' (allowed: default, format, hysteresis, latency_quantile, pacing, rule, version); did you mean 'rule'?",
        ),
        ({"default": {"latency": 30}}, "policy rule 'default': unknown key 'latency'"),
        ({"rule": [{"name": "r", "when": {"battery_abov": 5}}]}, "did you mean 'battery_above'?"),
        ({"hysteresis": {"band": 2}}, "policy [hysteresis]: unknown key 'band'"),
        ({"default": {"latency_ms": -5}}, "latency_ms = -5 is outside (0, inf]"),
        ({"default": {"energy_mj": 0}}, "energy_mj = 0 is outside (0, inf]"),
        ({"default": {"energy_fraction": 1.5}}, "energy_fraction = 1.5 is outside (0, 1]"),
        ({"default": {"energy_fraction": 0}}, "energy_fraction = 0 is outside (0, 1]"),
        ({"default": {"min_accuracy": 90}}, "min_accuracy = 90 is outside [0, 1]"),
        ({"default": {"latency_ms": "30"}}, "latency_ms must be a number, got '30'"),
        ({"default": {"latency_ms": True}}, "latency_ms must be a number"),
        ({"rule": [{"name": "r", "when": {"charging": "yes"}}]}, "charging must be true or false"),
        (
            {"rule": [{"name": "r", "when": {"battery_above": 150}}]},
            "battery_above = 150 is outside [0, 100]",
        ),
        (
            {"rule": [{"name": "r", "when": {"battery_above": 50, "battery_below": 20}}]},
            "never both hold",
        ),
        ({"rule": [{"name": "r", "latency_ms": 5}]}, "has no `when` conditions"),
        ({"rule": [{"name": "r", "when": {"charging": True}}] * 2}, "'r' is used twice"),
        ({"default": {"when": {"charging": True}}}, "[default] cannot have conditions"),
        ({"rule": {"name": "r"}}, "`rule` must be a list of tables"),
        ({"rule": [{"name": "r", "when": 5}]}, "`when` must be a table"),
        ({"rule": ["r"]}, "must be a table of keys"),
        ({"hysteresis": {"min_requests": -1}}, "min_requests must be an int >= 0"),
        ({"hysteresis": {"accuracy_margin": 2}}, "accuracy_margin = 2 is outside [0, 1]"),
        ({"version": 2}, "not a ponder policy of version 1"),
        ({"default": {"name": ""}}, "name must be a non-empty string"),
    ],
)
def test_validation_errors_name_the_problem(policy, fragment):
    with pytest.raises(ConfigError) as err:
        PolicySpec.from_dict(policy)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_file_errors_name_the_file(tmp_path):
    cases = {
        "p.yaml": ("", "must end in .toml or .json"),
        "missing.toml": (None, "no policy file at"),
        "bad.toml": ("[default\n", "is not valid TOML"),
        "bad.json": ("{", "is not valid JSON"),
        "neg.toml": ("[default]\nlatency_ms = -1\n", "neg.toml: policy rule 'default'"),
    }
    for name, (text, fragment) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_policy(tmp_path / name)


def test_without_tomllib_the_error_says_to_use_json(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    (tmp_path / "p.toml").write_text(_example())
    with pytest.raises(ConfigError, match="write the policy as JSON"):
        load_policy(tmp_path / "p.toml")
