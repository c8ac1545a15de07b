"""Tests of ponder._convert.checkpoint: save and load of converted user models, and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import inputs, make

import ponder
from ponder._convert.checkpoint import CONFIG, WEIGHTS, load, read_config, save
from ponder._core.config import config_from_dict

CONFIG_ZTW = ponder.EarlyExitConfig(num_exits=2, style="ztw", head="mlp")


def _converted(family: str, seed: int = 0):
    model = ponder.convert_(make(family, seed), CONFIG_ZTW)
    torch.manual_seed(seed)
    for name, p in model.ponder_exits.named_parameters():
        # untrained heads are near-uniform; spread weights make a wrong reload visible
        torch.nn.init.normal_(p, std=1.0 if name.endswith("bias") else 3.0)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    """A converted tiny ViT written to tmp_path/ckpt."""
    model = _converted("vit")
    save(model, tmp_path / "ckpt", extra={"budget": 0.5, "thresholds": [0.9, 0.8]})
    return tmp_path / "ckpt", model


@pytest.mark.parametrize("family", ["vit", "conv1d"])
def test_reload_gives_identical_exit_outputs(tmp_path, family):
    model = _converted(family)
    x = inputs(family, batch=8)
    expected = ponder.exit_outputs(model, x).logp  # [K, N, C]
    assert save(model, tmp_path / "ckpt") == tmp_path / "ckpt"
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {CONFIG, WEIGHTS}

    fresh = make(family, seed=1).train()  # other weights, unconverted, in train mode
    assert not torch.equal(fresh(x), model(x))
    loaded = load(tmp_path / "ckpt", model=fresh)
    assert loaded is fresh and not loaded.training
    np.testing.assert_array_equal(ponder.exit_outputs(loaded, x).logp, expected)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_extra_round_trips(saved):
    path, _ = saved
    assert read_config(path)["extra"] == {"budget": 0.5, "thresholds": [0.9, 0.8]}


def test_config_json_holds_the_conversion(saved):
    path, model = saved
    meta = json.loads((path / CONFIG).read_text())
    assert meta["format"] == "ponder-checkpoint" and meta["format_version"] == 1
    assert meta["source"] == {"kind": "user", "class": "TinyViT"}
    [conversion] = meta["conversions"]
    assert conversion["config"] == CONFIG_ZTW.to_dict()
    assert config_from_dict(conversion["config"]) == CONFIG_ZTW
    assert conversion["spec"] == model.ponder_exits.spec


def test_the_functions_the_messages_name_are_public():
    # the refusals below tell users to call ponder.save and ponder.load
    assert ponder.save is save and ponder.load is load


# ----------------------------------------------------------------------------- refusals


def test_missing_folder_says_how_to_write_one(tmp_path):
    with pytest.raises(ponder.CheckpointError, match=r"config.json is missing.*ponder\.save"):
        load(tmp_path / "nowhere", model=make("vit"))
    with pytest.raises(ponder.CheckpointError, match=r"ponder\.save"):
        load(tmp_path, model=make("vit"))  # the folder exists but holds no config.json


def test_corrupt_json(saved):
    path, _ = saved
    (path / CONFIG).write_text('{"format": "ponder-checkpoint", ')
    with pytest.raises(ponder.CheckpointError, match="is not valid JSON"):
        load(path, model=make("vit"))


def test_a_foreign_json_is_not_a_checkpoint(saved):
    path, _ = saved
    (path / CONFIG).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ponder.CheckpointError, match="not a ponder checkpoint config"):
        load(path, model=make("vit"))


def test_a_newer_format_asks_for_an_upgrade(saved):
    path, _ = saved
    meta = json.loads((path / CONFIG).read_text())
    (path / CONFIG).write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(ponder.CheckpointError, match=r"format 2, newer.*upgrade ponder"):
        load(path, model=make("vit"))


def test_a_user_model_needs_model_passed_in(saved):
    path, _ = saved
    with pytest.raises(ponder.CheckpointError, match=r"TinyViT.*ponder\.load\(path, model="):
        load(path)


def test_missing_weights_file(saved):
    path, _ = saved
    (path / WEIGHTS).unlink()
    with pytest.raises(ponder.CheckpointError, match=f"has no {WEIGHTS}.*incomplete"):
        load(path, model=make("vit"))


def test_a_failed_load_leaves_the_model_untouched(saved):
    path, _ = saved
    (path / WEIGHTS).unlink()
    fresh = make("vit")
    with pytest.raises(ponder.CheckpointError):
        load(path, model=fresh)
    assert not hasattr(fresh, "ponder_exits")


_MISMATCH = "was it saved from a different architecture"


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            lambda: tiny_models.TinyViT(n=5),
            id="one-block-more",
        ),
        pytest.param(
            lambda: tiny_models.TinyViT(d=24),
            id="wider",
        ),
        pytest.param(
            lambda: make("conv2d"),
            id="other-family",
        ),
    ],
)
def test_weights_from_another_architecture(saved, other):
    path, _ = saved
    with pytest.raises(ponder.CheckpointError, match=_MISMATCH):
        load(path, model=other())


def test_exits_and_moe_together_round_trip(tmp_path):
    # conversions are replayed in order on load; the MoE split of the fresh weights only fixes
    # shapes, and the saved experts, routers and neuron order then overwrite it
    model = make("vit")
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    ponder.convert_(model, ponder.MoEConfig(expert_size=8, tau=0.6))
    x = inputs("vit", batch=5)
    before = ponder.exit_outputs(model.eval(), x).logp
    save(model, tmp_path)
    kinds = [c["config"]["type"] for c in read_config(tmp_path)["conversions"]]
    assert kinds == ["early_exit", "moe"]
    restored = load(tmp_path, model=make("vit", seed=3))
    np.testing.assert_array_equal(ponder.exit_outputs(restored, x).logp, before)
    assert [c.kind for c in ponder._convert.convert.conversions(restored)] == ["early_exit", "moe"]


def test_a_fresh_process_loads_without_importing_the_converters_first(tmp_path):
    """`ponder.load` alone must know the built-in config types (regression: 'unknown config
    type early_exit' when nothing had imported ponder._early_exit.config yet)."""
    import subprocess
    import sys

    from ponder.models import create_model

    model = create_model("digits_cnn")
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2))
    save(model, tmp_path)
    code = f"import ponder; m = ponder.load({str(tmp_path)!r}); print(m.ponder_exits.num_exits)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr[-2000:]
