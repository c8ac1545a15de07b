"""The cost model's per-call estimates (what the engine's anytime deadlines and energy without a
meter use): batch buckets, the per-step time, and stage power from the cost table."""

from __future__ import annotations

import pytest

from ponder.runtime import CostModel
from ponder.runtime._bundle.costs import CostTable, StageCost

STAGE_MS = (2.0, 8.0, 6.0, 4.0)


def _table(energy=None):
    stages = tuple(
        StageCost(i, t, t * 1.1, None if energy is None else energy[i])
        for i, t in enumerate(STAGE_MS)
    )
    return CostTable("onnxruntime", "test-cpu", 1, 2, stages, energy_source="test probe")


def test_a_call_is_predicted_from_its_batch_bucket_or_the_nearest_one():
    cm = CostModel(4, _table(), alpha=0.5)
    assert cm.call_ms(0, 1) == 2.0
    assert cm.call_ms(0, 4) == 8.0  # only bucket 1 known: scaled rows to rows
    cm.observe(0, 10.0, batch=4)  # the first call at bucket 4 sets it
    assert cm.call_ms(0, 4) == 10.0 and cm.call_ms(0, 3) == pytest.approx(7.5)
    assert cm.call_ms(0, 8) == 20.0  # bucket 4 is the nearest measured one
    cm.observe(0, 20.0, batch=4)  # later calls move it by the EWMA: 10 + 0.5 * (20 - 10)
    assert cm.call_ms(0, 4) == 15.0
    cm.observe(0, 6.0, batch=3)  # a partly full bucket counts as if full: 6 * 4 / 3 = 8
    assert cm.call_ms(0, 4) == pytest.approx(15.0 + 0.5 * (8.0 - 15.0))


def test_a_call_adds_the_engines_step_time_and_follows_the_clock():
    cm = CostModel(4, _table(), alpha=0.5)
    cm.observe(1, 16.0, batch=1, speed=0.5)  # 8 ms at full clock, as the table says
    assert cm.call_ms(1, 1) == 8.0 and cm.call_ms(1, 1, speed=0.5) == 16.0
    cm.observe_request(0.0, 1.0)  # per-step time: 0 + 0.5 * (1 - 0)
    assert cm.call_ms(1, 1) == 8.5


def test_nothing_known_predicts_zero_and_no_energy():
    cm = CostModel(4, stage_flops=(1.0, 4.0, 3.0, 2.0))
    assert cm.call_ms(2, 5) == 0.0
    assert cm.call_energy_mj(2, 3.0) is None
    assert cm.call_energy_basis.startswith("not estimated")
    cm.observe(2, 3.0, batch=2)
    assert cm.call_ms(2, 2) == 3.0 and cm.call_ms(2, 1) == 1.5


def test_call_energy_is_the_tables_stage_power_times_the_measured_time():
    cm = CostModel(4, _table(energy=(1.0, 2.0, 3.0, 4.0)))  # 0.5, 0.25, 0.5 and 1 W
    assert cm.call_energy_mj(0, 10.0) == 5.0 and cm.call_energy_mj(3, 2.0) == 2.0
    assert "test probe" in cm.call_energy_basis
