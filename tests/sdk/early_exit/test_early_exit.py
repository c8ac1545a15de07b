"""Conversion to early exits: block finding, placement, idempotence, errors, every family."""

import copy
import warnings

import pytest
import tiny_models
import torch
from tiny_models import CLASSES, TinyViT, inputs, make
from torch import nn

import ponder
from ponder._convert.calls import call_model
from ponder._early_exit.stack import get_stack
from ponder.models import create_model, list_models


@pytest.mark.parametrize("family", sorted(tiny_models.FAMILIES))
def test_conversion_keeps_the_models_own_output(family):
    model = make(family)
    x = inputs(family)
    before = call_model(model, x)
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    torch.testing.assert_close(call_model(model, x), before, rtol=0, atol=0)
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


def test_named_blocks_of_a_token_model_pool_tokens():
    """Blocks named by the user on a ViT: a known container keeps its family's pooling, an
    unknown one is pooled by what its blocks return (tokens: mean), not as feature maps."""
    known = ponder.convert_(make("vit"), ponder.EarlyExitConfig(blocks="blocks", num_exits=2))
    assert known.ponder_exits.spec["pooling"] == "cls"
    model = _TrunkViT()
    x = inputs("vit")
    ponder.convert_(model, ponder.EarlyExitConfig(blocks="trunk", num_exits=2), example_inputs=x)
    assert model.ponder_exits.spec["pooling"] == "mean"
    assert model.ponder_exits.spec["widths"] == [16, 16]
    logits = model(x)  # the exits run: [B, T, D] pooled over tokens into the heads
    assert torch.isfinite(logits).all()


class _TrunkViT(TinyViT):
    """TinyViT with its blocks under a name no convention knows."""

    def __init__(self):
        super().__init__()
        self.trunk = self.blocks
        del self.blocks

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.norm(self.trunk(x))[:, 0])


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
    from ponder._core.config import config_from_dict

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


@pytest.mark.parametrize("family", ["conv1d", "bert"])
def test_detach_on_a_copy_removes_only_ponders_hooks(family):
    model = ponder.convert_(make(family), ponder.EarlyExitConfig(num_exits=2))
    calls = []
    user = model.get_submodule(get_stack(model).spec["block_paths"][0])
    user.register_forward_hook(lambda *_: calls.append(1))

    def hooks(m):
        return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())

    before = hooks(model)
    clone = copy.deepcopy(model)
    get_stack(clone).detach()
    assert hooks(clone) == 1  # the user's hook, nothing of ponder's
    assert hooks(model) == before  # the original still has every hook
    call_model(clone, inputs(family))
    assert calls == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ponder.exit_outputs(model, inputs(family))  # the original's exits still run
    assert out.logp.shape[0] == 3


# ------------------------------------------------ widths read from the modules, with no inputs


class _Scale(nn.Module):
    """A user module with no width attribute (it keeps the shape, which ponder cannot know)."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.s


class _Down(nn.Module):
    """Its width attribute (the conv's 4 channels) is wrong: it flattens [4, 10, 10] to 400."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).flatten(1)


class _SpatialMean(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def _issue_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _head(width: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))


IMAGE, VECTOR = (3, 1, 12, 12), (3, 6)
# name: (model, input shape); every block before the last gets an exit
SEQUENTIALS = {
    "issue": (_issue_cnn, IMAGE),
    "pools_norms_dropout": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3),
            nn.BatchNorm2d(8),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.1),
            nn.Identity(),
            nn.Conv2d(8, 6, 3),
            nn.GroupNorm(2, 6),
            nn.ZeroPad2d(1),
            _head(6),
        ),
        IMAGE,
    ),
    "adaptive_2x2_then_mlp": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3),
            nn.AdaptiveAvgPool2d((2, 2)),
            nn.Flatten(),
            nn.Linear(32, 20),
            nn.ReLU(),
            nn.Linear(20, CLASSES),
        ),
        IMAGE,
    ),
    "adaptive_keeps_a_size": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3),
            nn.AdaptiveMaxPool2d((3, None)),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1),
            nn.AdaptiveAvgPool2d((3, 2)),
            nn.Flatten(),
            nn.Linear(24, CLASSES),
        ),
        IMAGE,
    ),
    "nested": (
        lambda: nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(2), nn.Sequential(nn.Dropout(), nn.ReLU())),
            nn.Sequential(nn.Conv2d(8, 16, 3)),
            nn.Sequential(nn.BatchNorm2d(16)),
            _head(16),
        ),
        IMAGE,
    ),
    "flatten_after_maxpool_read_from_the_next_linear": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(200, 16),
            nn.ReLU(),
            nn.Linear(16, CLASSES),
        ),
        IMAGE,
    ),
    "user_module_ends_a_block": (
        lambda: nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 8, 3), _Scale()),
            nn.Sequential(nn.Conv2d(8, 8, 3), _Scale()),
            nn.ReLU(),
            _head(8),
        ),
        IMAGE,
    ),
    "user_module_as_a_block": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3),
            _Scale(),
            nn.Conv2d(8, 8, 3),
            _Scale(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, CLASSES),
        ),
        IMAGE,
    ),
    "wrong_width_attribute_corrected_by_the_next_linear": (
        lambda: nn.Sequential(
            _Down(),
            nn.ReLU(),
            nn.Linear(400, 16),
            nn.ReLU(),
            nn.Linear(16, CLASSES),
        ),
        IMAGE,
    ),
    "conv1d": (
        lambda: nn.Sequential(
            nn.Conv1d(1, 4, 3),
            nn.BatchNorm1d(4),
            nn.AvgPool1d(2),
            nn.Conv1d(4, 8, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(3),
            nn.Flatten(),
            nn.Linear(24, CLASSES),
        ),
        (3, 1, 20),
    ),
    "mlp": (
        lambda: nn.Sequential(
            nn.Dropout(),
            nn.Linear(6, 32),
            nn.ReLU(),
            nn.Linear(32, 16),
            nn.LayerNorm(16),
            nn.GELU(),
            nn.Linear(16, CLASSES),
        ),
        VECTOR,
    ),
    "mlp_batchnorm_first": (
        lambda: nn.Sequential(
            nn.BatchNorm1d(6),
            nn.ReLU(),
            nn.Linear(6, 10),
            nn.Tanh(),
            nn.Linear(10, CLASSES),
        ),
        VECTOR,
    ),
}


def _static_and_dry_run_specs(model: nn.Module, x: torch.Tensor, config):
    static = ponder.convert_(copy.deepcopy(model), config)
    ran = ponder.convert_(copy.deepcopy(model), config, example_inputs=x)
    return static.ponder_exits.spec, ran.ponder_exits.spec


@pytest.mark.parametrize("name", sorted(SEQUENTIALS))
def test_widths_without_inputs_match_a_dry_run(name):
    build, shape = SEQUENTIALS[name]
    torch.manual_seed(0)
    model = build().eval()
    config = ponder.EarlyExitConfig(exits=tuple(range(len(model) - 2)))
    static, ran = _static_and_dry_run_specs(model, torch.randn(shape), config)
    assert static == ran


# the Sequential built-ins: their exit widths are read from the modules, without a dry run
# (digits_vit's blocks keep the width, which a dry run measures)
@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_cnn")])
def test_builtin_models_widths_match_a_dry_run(name):
    model = create_model(name, width=4, num_blocks=5).eval()
    shape = {"digits_cnn": (3, 1, 8, 8), "mnist1d_cnn": (3, 1, 40)}[name]
    config = ponder.EarlyExitConfig(exits=(0, 1, 2, 3))
    static, ran = _static_and_dry_run_specs(model, torch.randn(shape), config)
    assert static == ran and static["widths"] == ([4, 4, 8, 8] if name == "digits_cnn" else [4] * 4)


def test_issue_cnn_converts_and_runs_without_example_inputs():
    torch.manual_seed(0)
    model = ponder.convert_(_issue_cnn().eval(), ponder.EarlyExitConfig())
    spec = model.ponder_exits.spec
    assert spec["exit_blocks"] == [0, 1, 3, 4] and spec["widths"] == [8, 8, 16, 16]
    x = torch.randn(IMAGE)
    assert ponder.exit_outputs(model, x).logp.shape == (5, 3, 10)
    assert ponder.infer(model, x, thresholds=0.5).prediction.shape == (3,)


@pytest.mark.parametrize(
    ("model", "block", "match", "width"),
    [
        (  # the flattened size depends on the image size, and a LazyLinear has not learnt it
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.LazyLinear(10),
                nn.ReLU(),
                nn.Linear(10, CLASSES),
            ),
            2,
            r"block '2' \(Flatten\): Flatten merges a \[4, \?, \?\] map, whose spatial size "
            r"depends on the input.*example_inputs=",
            4 * 5 * 5,
        ),
        (  # _Scale could change the width, and _SpatialMean declares none
            lambda: nn.Sequential(nn.Conv2d(1, 4, 3), _Scale(), _SpatialMean(), nn.Linear(4, 3)),
            1,
            r"block '1' \(_Scale\): _Scale has a forward of its own and no width attribute.*"
            r"example_inputs=",
            4,
        ),
    ],
    ids=["flatten_into_a_lazy_linear", "user_module_into_a_user_module"],
)
def test_unknowable_width_asks_for_example_inputs(model, block, match, width):
    config = ponder.EarlyExitConfig(exits=(block,))
    with pytest.raises(ponder.UnsupportedModelError, match=match):
        ponder.convert_(model(), config)
    converted = ponder.convert_(model(), config, example_inputs=torch.randn(IMAGE))
    assert converted.ponder_exits.spec["widths"] == [width]


def test_class_count_is_the_last_linear_and_a_model_without_one_is_refused():
    from ponder._early_exit.widths import class_count

    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 7))
    assert class_count(head, "unused") == 7
    with pytest.raises(ponder.UnsupportedModelError, match=r"ReLU: it holds no nn\.Linear; set it"):
        class_count(nn.ReLU(), "set it")
    no_linear = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3))
    with pytest.raises(ponder.UnsupportedModelError, match=r"EarlyExitConfig\(num_classes=...\)"):
        ponder.convert_(no_linear, ponder.EarlyExitConfig(num_exits=1))
