"""Usage traces: CSV round trip, errors that name the line, the synthetic day, replay."""

from __future__ import annotations

import pytest

from ponder import ConfigError
from ponder.runtime import ReplayProbe, Trace, TracePoint, day_trace

RECORDED = """\
# a phone's battery, logged every 10 minutes
time_s,requests_per_s,charging,battery_percent
0,0.5,0,80
600,1.5,0,76.5
1200,0,1,
"""


def _write(tmp_path, text: str):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_load_reads_rows_and_optional_columns(tmp_path):
    trace = Trace.load(_write(tmp_path, RECORDED))
    assert trace.points[1] == TracePoint(600.0, 1.5, False, None, 76.5)
    assert trace.points[2].battery_percent is None and trace.points[2].charging is True
    assert trace.duration_s == 1200.0 and trace.synthetic is False
    assert trace.describe().startswith("recorded trace: 3 rows")


def test_at_is_stepwise():
    trace = Trace((TracePoint(0.0, 1.0, False), TracePoint(10.0, 2.0, True)))
    assert [trace.at(t).requests_per_s for t in (-5.0, 0.0, 9.99, 10.0, 1e6)] == [1, 1, 1, 2, 2]


def test_save_load_round_trip(tmp_path):
    trace = day_trace(hours=3.0, step_s=900.0, seed=3)
    again = Trace.load(trace.save(tmp_path / "day.csv"))
    assert again == trace and again.synthetic is True
    recorded = Trace.load(_write(tmp_path, RECORDED))
    assert Trace.load(recorded.save(tmp_path / "copy.csv")) == recorded


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("time_s,charging\n0,1\n", r"line 1: header .*missing: \['requests_per_s'\]"),
        ("time_s,requests_per_s,charging,battery_pct\n", r"line 1: .*unknown: \['battery_pct'\]"),
        ("# c\ntime_s,requests_per_s,charging\n0,1,0\n0,2,0\n", "line 4: time_s 0 is not after"),
        (
            "time_s,requests_per_s,charging\n0,1,0\n5,fast,0\n",
            "line 3: requests_per_s 'fast' is not",
        ),
        ("time_s,requests_per_s,charging\n0,1,maybe\n", "line 2: charging 'maybe'"),
        ("time_s,requests_per_s,charging\n0,1\n", "line 2: 2 cells, but the header has 3"),
        ("time_s,requests_per_s,charging,battery_percent\n0,1,0,140\n", "line 2: battery_percent"),
        ("time_s,requests_per_s,charging\n", "no data rows"),
    ],
)
def test_bad_traces_name_the_line(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Trace.load(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no trace file"):
        Trace.load(tmp_path / "absent.csv")


def test_day_trace_shape_and_labels():
    day = day_trace()
    assert day.synthetic and day.describe().startswith("synthetic trace: 145 rows")
    assert day.duration_s == 24 * 3600
    night, morning, evening = day.at(3 * 3600), day.at(8 * 3600), day.at(20 * 3600)
    assert night.charging and not morning.charging and not evening.charging
    assert night.requests_per_s < morning.requests_per_s < evening.requests_per_s
    assert all(p.ambient_c is not None and p.battery_percent is None for p in day.points)
    assert day_trace(seed=1) == day_trace(seed=1) != day_trace(seed=2)


def test_replay_probe_reads_the_recorded_curve():
    trace = Trace(
        (
            TracePoint(0.0, 1.0, False, battery_percent=80.0),
            TracePoint(600.0, 1.0, True, battery_percent=75.0),
        )
    )
    now = [0.0]
    probe = ReplayProbe(trace, clock=lambda: now[0])
    assert probe.read().percent == 80.0 and probe.read().charging is False
    now[0] = 700.0
    assert probe.read().percent == 75.0 and probe.read().charging is True
    state = probe.state(100.0)
    assert state.battery_percent == 80.0 and state.time_s == 100.0 and state.simulated
    assert "simulated" in repr(probe)


def test_replay_needs_battery_percent():
    with pytest.raises(ConfigError, match="no battery_percent at time_s 0"):
        ReplayProbe(day_trace(hours=1.0))
