"""Conversion to early exits: block finding, placement, idempotence, errors, every family."""

import copy
import warnings

import pytest
import tiny_models
import torch
from tiny_models import CLASSES, inputs, make

import ponder
from ponder._infer import _call


@pytest.mark.parametrize("family", sorted(tiny_models.FAMILIES))
def test_conversion_keeps_the_models_own_output(family):
    model = make(family)
    x = inputs(family)
    before = _call(model, x)
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    torch.testing.assert_close(_call(model, x), before, rtol=0, atol=0)
    stack = model.ponder_exits
    assert stack.num_exits == 3 and stack.spec["classes"] == CLASSES


def test_found_blocks_and_default_pooling():
    cases = {
        "bert": ("encoder.layer.0", "cls"),
        "gpt": ("transformer.h.0", "last"),
        "vit": ("blocks.0", "cls"),
        "conv1d": ("0", "avg"),
    }
    for family, (first, pooling) in cases.items():
        model = ponder.convert_(make(family), ponder.EarlyExitConfig(num_exits=1))
        assert model.ponder_exits.spec["block_paths"][0] == first
        assert model.ponder_exits.spec["pooling"] == pooling


def test_evenly_spaced_exits_and_explicit_exits():
    model = ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(num_exits=3))
    assert model.ponder_exits.spec["exit_blocks"] == [0, 1, 3]  # 5 blocks before the head
    model = ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(exits=(1, 2)))
    assert model.ponder_exits.spec["exit_blocks"] == [1, 2]


def test_sequential_keeps_its_length_and_indexing():
    model = make("conv1d")
    n, head = len(model), model[-1]
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    assert len(model) == n and model[-1] is head and len(list(model)) == n
    assert isinstance(model, torch.nn.Sequential)


def test_dry_run_widths_match_attribute_widths():
    a = ponder.convert_(make("vit"), ponder.EarlyExitConfig(num_exits=2))
    b = ponder.convert_(
        make("vit"), ponder.EarlyExitConfig(num_exits=2), example_inputs=inputs("vit")
    )
    assert a.ponder_exits.spec == b.ponder_exits.spec


def test_converting_twice_changes_nothing_and_warns():
    model = ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(num_exits=2))
    state = copy.deepcopy(model.state_dict())
    with pytest.warns(ponder.NoEffectWarning, match="changed nothing"):
        ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    assert model.state_dict().keys() == state.keys()
    with pytest.raises(ponder.ConfigError, match="already has early exits"):
        ponder.convert_(model, ponder.EarlyExitConfig(num_exits=3))


def test_converting_nothing_warns():
    model = make("conv1d")
    with pytest.warns(ponder.NoEffectWarning):
        ponder.convert_(model, ponder.EarlyExitConfig(num_exits=0))
    assert not hasattr(model, "ponder_exits")


def test_unsupported_model_error_names_children_and_the_fix():
    with pytest.raises(ponder.UnsupportedModelError, match=r"body \(Linear\).*blocks="):
        ponder.convert_(tiny_models.Unsupported(), ponder.EarlyExitConfig())


def test_user_named_blocks():
    model = tiny_models.Unsupported()
    ponder.convert_(model, ponder.EarlyExitConfig(blocks=("body", "out"), exits=(0,)))
    assert model.ponder_exits.spec["block_paths"] == ["body", "out"]
    with pytest.raises(ponder.ConfigError, match="no submodule 'nope'"):
        ponder.convert_(tiny_models.Unsupported(), ponder.EarlyExitConfig(blocks=("nope",)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head": "conv"}, "head='conv'"),
        ({"style": "msdnet"}, "style="),
        ({"exits": (3, 1)}, "increasing"),
        ({"num_exits": -1}, ">= 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ponder.ConfigError, match=match):
        ponder.EarlyExitConfig(**kwargs)


def test_exit_positions_out_of_range():
    with pytest.raises(ponder.ConfigError, match=r"exits must lie in 0\.\.3"):
        ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(exits=(4,)))
    with pytest.raises(ponder.ConfigError, match="only 4 places"):
        ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(num_exits=9))


def test_config_round_trips_through_json():
    from ponder._config import config_from_dict

    config = ponder.EarlyExitConfig(exits=(0, 2), blocks=("a", "b"), head="mlp", style="sdn")
    data = config.to_dict()
    assert data["type"] == "early_exit" and data["version"] == 1
    assert config_from_dict(data) == config
    with pytest.raises(ponder.ConfigError, match="newer than this ponder"):
        config_from_dict({**data, "version": 99})
    with pytest.raises(ponder.ConfigError, match="unknown 'early_exit' config fields"):
        config_from_dict({**data, "colour": "red"})


def test_deepcopy_keeps_working_hooks():
    model = ponder.convert_(make("conv1d"), ponder.EarlyExitConfig(num_exits=2))
    clone = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ponder.exit_outputs(clone, inputs("conv1d"))
    assert out.logp.shape == (3, 6, CLASSES)
