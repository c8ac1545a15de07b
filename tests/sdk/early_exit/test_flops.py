"""Tests of ponder._early_exit.flops: per-exit FLOPs against counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import CLASSES, inputs, make

import ponder
from ponder._early_exit.flops import ExitCosts, count_costs

WIDTH, LENGTH = 8, 20  # the tiny conv1d model: 5 blocks of Conv1d(k=3, padding=1), 20 steps


def _conv1d(c_in: int, c_out: int, k: int, length: int) -> int:
    return 2 * c_in * c_out * k * length


def _linear(d_in: int, d_out: int, rows: int = 1) -> int:
    return 2 * d_in * d_out * rows


def _conv1d_blocks(length: int = LENGTH) -> list[int]:
    """FLOPs of each block (BatchNorm and ReLU are not counted, as FlopCounterMode does)."""
    return [_conv1d(1, WIDTH, 3, length)] + [_conv1d(WIDTH, WIDTH, 3, length)] * 4


def _head(width: int, style: str, head: str, k: int) -> int:
    d_in = width + (CLASSES if style == "ztw" and k > 0 else 0)  # ZTW: previous logits too
    if head == "linear":
        return _linear(d_in, CLASSES)
    hidden = max(width, 2 * CLASSES)  # ExitHead's default hidden width
    return _linear(d_in, hidden) + _linear(hidden, CLASSES)


def _converted(family: str, **kwargs):
    torch.manual_seed(0)
    return ponder.convert_(make(family), ponder.EarlyExitConfig(**kwargs))


@pytest.mark.parametrize("style", ["sdn", "ztw"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_conv1d_costs_match_a_count_by_hand(style, head):
    exits = (0, 1, 3)
    model = _converted("conv1d", exits=exits, style=style, head=head)
    costs = count_costs(model, inputs("conv1d"))

    cumulative = np.cumsum(_conv1d_blocks())  # [5] blocks so far
    full = int(cumulative[-1]) + _linear(WIDTH, CLASSES)  # plus the model's own classifier
    heads = [_head(WIDTH, style, head, k) for k in range(len(exits))]
    assert costs.backbone == (*(float(cumulative[b]) for b in exits), float(full))
    assert costs.heads == tuple(map(float, heads))
    assert costs.full == full == 31_760


def test_exit_costs_are_cumulative_and_end_with_every_head():
    costs = count_costs(_converted("conv1d", exits=(0, 1, 3), style="ztw"), inputs("conv1d"))
    backbone, heads = np.array(costs.backbone), np.array(costs.heads)
    expected = backbone + np.append(np.cumsum(heads), heads.sum())
    np.testing.assert_array_equal(costs.exit_costs, expected)
    assert costs.exit_costs[-1] == costs.full + heads.sum()
    assert np.all(np.diff(costs.exit_costs) > 0)
    assert costs.head_overhead == pytest.approx(heads.sum() / costs.full, rel=1e-12)
    assert 0 < costs.head_overhead < 0.05


def test_to_dict_holds_every_derived_value():
    costs = ExitCosts(backbone=(10.0, 30.0, 60.0), heads=(1.0, 2.0), full=60.0)
    assert costs.to_dict() == {
        "backbone": [10.0, 30.0, 60.0],
        "heads": [1.0, 2.0],
        "full": 60.0,
        "exit_costs": [11.0, 33.0, 63.0],
        "head_overhead": 0.05,
    }


def test_costs_are_per_sample_whatever_the_batch():
    model = _converted("conv1d", num_exits=2)
    one = count_costs(model, inputs("conv1d", batch=1))
    assert count_costs(model, inputs("conv1d", batch=13)) == one


def test_costs_follow_the_input_shape():
    model = _converted("conv1d", exits=(1,))
    x = torch.randn(2, 1, 2 * LENGTH)  # twice as long: every convolution costs twice as much
    costs = count_costs(model, x)
    assert costs.backbone[0] == sum(_conv1d_blocks(2 * LENGTH)[:2])
    assert costs.heads == (float(_linear(WIDTH, CLASSES)),)  # heads see pooled features


def test_dict_inputs_work_and_batch_does_not_matter():
    model = _converted("bert", num_exits=2, style="sdn")
    x = inputs("bert", batch=6)
    costs = count_costs(model, x)
    assert costs == count_costs(model, {k: v[1:2] for k, v in x.items()})
    assert len(costs.backbone) == 3 and costs.backbone[-1] == costs.full
    assert np.all(np.diff(costs.backbone) > 0)
    d = 16  # TinyBert width; heads read the class token
    assert costs.heads == (float(_linear(d, CLASSES)),) * 2


def test_attention_is_counted():
    model = _converted("bert", num_exits=2, style="sdn")  # exits after blocks 0 and 2
    tokens, d = 7, 16  # inputs("bert") has 7 tokens; TinyBert is 16 wide with 2 heads
    layer = (
        _linear(d, 3 * d, tokens)  # q, k, v projections
        + 2 * 2 * tokens * tokens * d  # q @ k^T and weights @ v over all heads
        + _linear(d, d, tokens)  # output projection
        + _linear(d, 2 * d, tokens)
        + _linear(2 * d, d, tokens)  # the MLP
    )
    costs = count_costs(model, inputs("bert"))
    assert costs.backbone == (layer, 3 * layer, 4 * layer + _linear(d, CLASSES))


def test_counting_leaves_a_training_model_untouched():
    model = _converted("conv1d", num_exits=2).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count_costs(model, inputs("conv1d"))
    assert model.training
    after = model.state_dict()
    assert [k for k in state if not torch.equal(state[k], after[k])] == []


def test_counting_an_unconverted_model_says_how_to_convert():
    with pytest.raises(ponder.ConfigError, match=r"convert it first"):
        count_costs(make("conv1d"), inputs("conv1d"))
