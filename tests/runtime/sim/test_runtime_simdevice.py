"""The simulated device: battery arithmetic, heating and throttling, cost tables, seeds."""

from __future__ import annotations

import pytest

from ponder import ConfigError
from ponder.runtime import (
    Battery,
    CostTable,
    SimulatedDevice,
    StageCost,
    StageRun,
    ThermalModel,
)


def test_battery_drains_by_power_times_time():
    device = SimulatedDevice([100.0], 3.6, battery=Battery(capacity_wh=1.0, percent=50.0))
    run = device.run_stage(0)  # 0.1 s at 3.6 W = 0.36 J of a 3600 J battery = 0.01 %
    assert run == StageRun(latency_ms=100.0, energy_mj=pytest.approx(360.0))
    assert device.battery.percent == pytest.approx(50.0 - 0.01)
    assert device.time_s == pytest.approx(0.1)
    device.idle(1000.0)  # 1000 s at 0.5 W = 500 J = 13.89 %
    assert device.battery.percent == pytest.approx(50.0 - 0.01 - 500 / 3600 * 100)


def test_charging_raises_the_battery_and_clamps_at_100():
    battery = Battery(capacity_wh=1.0, percent=90.0)
    device = SimulatedDevice([10.0], idle_power_w=1.0, battery=battery, charging=True)
    device.charging_power_w = 4.6
    device.idle(50.0)  # net 3.6 W for 50 s = 180 J = 5 %
    assert battery.percent == pytest.approx(95.0)
    device.idle(3600.0)
    assert battery.percent == 100.0


def test_battery_stops_at_empty():
    battery = Battery(capacity_wh=0.001)
    battery.drain(100.0)
    assert battery.percent == 0.0 and battery.empty


def test_sustained_load_throttles_and_idle_recovers():
    device = SimulatedDevice([10.0, 10.0], 5.0)  # default thermal model: phone-like
    first = device.run_stage(0).latency_ms
    while device.time_s < 300.0:  # five minutes of back-to-back stages
        device.run_stage(1)
    hot = device.state()
    assert hot.temperature_c > 70.0 and hot.speed < 1.0
    assert device.run_stage(0).latency_ms == pytest.approx(first / device.state().speed, rel=1e-3)
    device.idle(600.0)
    cool = device.state()
    assert cool.temperature_c < 40.0 and cool.speed == 1.0
    assert device.run_stage(0).latency_ms == pytest.approx(first)


def test_throttled_speed_is_linear_between_the_limits():
    thermal = ThermalModel(throttle_start_c=70.0, throttle_full_c=90.0, min_speed=0.5)
    for temperature, speed in [(25.0, 1.0), (70.0, 1.0), (80.0, 0.75), (90.0, 0.5), (99.0, 0.5)]:
        thermal.temperature_c = temperature
        assert thermal.speed == pytest.approx(speed)


def test_heating_approaches_ambient_plus_power_times_resistance():
    thermal = ThermalModel(ambient_c=20.0, resistance_c_per_w=10.0, time_constant_s=30.0)
    thermal.step(2.0, 30.0)  # one time constant: 1 - 1/e of the way to 40 °C
    assert thermal.temperature_c == pytest.approx(40.0 - 20.0 / 2.718281828459045)


def test_batch_scaling_model():
    device = SimulatedDevice([10.0], batch_exponent=0.9)
    assert device.run_stage(0, batch=8).latency_ms == pytest.approx(10.0 * 8**0.9)


def test_state_is_labelled_simulated():
    device = SimulatedDevice([1.0, 2.0], [2.0, 4.0])
    device.run_stage(1)
    state = device.state()
    assert state.simulated is True and state.power_w == pytest.approx(4.0)
    assert device.describe().startswith("simulated device: 2 stages")
    assert "simulated" in str(device) and "simulated" in repr(device)


def _table(batch: int = 1) -> CostTable:
    stages = (StageCost(0, 4.0, 5.0, energy_mj=8.0), StageCost(1, 2.0, 2.5, energy_mj=None))
    return CostTable("onnxruntime", "test", batch, 1, stages, simulated=True)


def test_from_cost_table():
    device = SimulatedDevice.from_cost_table(_table(), power_w=1.5, idle_power_w=0.2)
    assert device.stage_latency_ms == (4.0, 2.0)
    assert device.stage_power_w == (2.0, 1.5)  # 8 mJ / 4 ms = 2 W; no energy -> power_w
    assert device.idle_power_w == 0.2
    assert device.run_stage(0).energy_mj == pytest.approx(8.0)


def test_from_cost_table_at_a_larger_batch():
    device = SimulatedDevice.from_cost_table(_table(batch=4), batch_exponent=1.0)
    assert device.stage_latency_ms == (1.0, 0.5)


def test_noise_is_deterministic_under_a_seed():
    def latencies(seed: int) -> list[float]:
        device = SimulatedDevice([10.0, 20.0], noise=0.2, seed=seed)
        return [device.run_stage(i % 2).latency_ms for i in range(20)]

    assert latencies(7) == latencies(7)
    assert latencies(7) != latencies(8)
    assert len(set(latencies(7)[::2])) > 1  # the jitter is there


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"stage_latency_ms": []}, "one latency per stage"),
        ({"stage_latency_ms": [1.0, 0.0]}, "must be > 0 ms"),
        ({"stage_latency_ms": [1.0, 2.0], "stage_power_w": [1.0]}, "1 values for 2 stages"),
        ({"stage_latency_ms": [1.0], "noise": -0.1}, "noise must be >= 0"),
    ],
)
def test_bad_device_arguments(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SimulatedDevice(**kwargs)


def test_bad_stage_index_names_the_range():
    with pytest.raises(ConfigError, match=r"stages 0\.\.1"):
        SimulatedDevice([1.0, 2.0]).run_stage(2)


def test_bad_battery_and_thermal_arguments():
    with pytest.raises(ConfigError, match="capacity_wh must be > 0"):
        Battery(capacity_wh=0.0)
    with pytest.raises(ConfigError, match=r"percent must be in 0\.\.100"):
        Battery(capacity_wh=1.0, percent=120.0)
    with pytest.raises(ConfigError, match="must be above throttle_start_c"):
        ThermalModel(throttle_start_c=80.0, throttle_full_c=70.0)
