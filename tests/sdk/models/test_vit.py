"""The digits ViT: shapes, its registry entry and recipe, a checkpoint round trip, and early
exits finding its blocks as a ViT's."""

from __future__ import annotations

import pytest
import torch

import ponder
from ponder import models


def _tiny(**kwargs):
    torch.manual_seed(0)
    return models.create_model("digits_vit", width=16, num_blocks=3, heads=2, **kwargs).eval()


def test_forward_shapes_and_tokens():
    model = _tiny(num_classes=7)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 7)
    assert model.pos.shape == (1, 17, 16)  # 16 patches of 2x2 and a class token
    h = model.blocks[0](torch.randn(2, 17, 16))
    assert h.shape == (2, 17, 16)


def test_recipe_builds_its_model():
    recipe = models.DIGITS_VIT_RECIPE
    model = models.create_model(
        recipe["model"],
        width=recipe["width"],
        num_blocks=recipe["num_blocks"],
        heads=recipe["heads"],
    )
    assert isinstance(model.blocks, torch.nn.ModuleList)
    assert len(model.blocks) == recipe["num_blocks"] and 4 <= recipe["num_blocks"] <= 6
    assert 32 <= recipe["width"] <= 64


def test_bad_sizes_say_what_is_wrong():
    with pytest.raises(ponder.ConfigError, match=r"multiple of heads"):
        models.digits_vit(width=30, heads=4)
    with pytest.raises(ponder.ConfigError, match=r"num_blocks must be a positive integer"):
        models.digits_vit(num_blocks=0)


def test_early_exits_find_the_blocks(tmp_path):
    model = _tiny()
    x = torch.rand(6, 1, 8, 8)
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2, style="ztw"), example_inputs=x)
    stack = model.ponder_exits
    assert stack.spec["block_paths"] == ["blocks.0", "blocks.1", "blocks.2"]
    costs = ponder.count_costs(model, x)
    assert costs.exit_costs[0] < costs.exit_costs[1] < costs.full
    data = ponder.exit_data(model, x, torch.arange(6) % 10, costs)
    assert data.logp.shape == (3, 6, 10)
    with torch.no_grad():
        own = torch.log_softmax(model(x), -1)  # the last exit is the model's own head
    torch.testing.assert_close(torch.as_tensor(data.logp[-1]), own, rtol=1e-5, atol=1e-5)
    path = ponder.save(model, tmp_path / "vit.pt")
    again = ponder.load(path)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model(x), rtol=0, atol=0)
