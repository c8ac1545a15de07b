"""Operating points written at export: per MoE tau for dynamic-k models, truncated variants,
and a bundle whose engine and policy take them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ponder
from ponder.data.datasets import load_dataset
from ponder.export import export_bundle
from ponder.export._checkpoint import TAU_GRID, exit_rule_and_points
from ponder.runtime import Engine, OperatingPoint


def _moe_digits_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)),
        nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)),
        nn.Linear(64, 10),
    )
    ponder.convert_(model, ponder.MoEConfig(expert_size=8, tau=0.3))
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    return model.eval()


def test_moe_models_get_operating_points_per_tau(tmp_path):
    model, splits = _moe_digits_mlp(), load_dataset("digits")
    rule, points = exit_rule_and_points(model, splits, {"rule": "max_prob"})
    taus = sorted({p["moe_tau"] for p in points})
    assert taus == sorted({*TAU_GRID, 0.3})
    assert all(len(p["thresholds"]) == 1 for p in points)
    # every sample leaving at stage 0: its FLOPs fall as tau drops experts (relative to tau 0)
    first = [p for p in points if p["max_stage"] == 0]
    assert len(first) == len(taus)  # one such row per tau, not one per threshold
    flops = {p["moe_tau"]: p["flops_fraction"] for p in first}
    assert flops[0.0] > flops[0.4] > flops[0.8], flops
    manifest = export_bundle(
        model,
        splits.calib.x[:8],
        tmp_path / "b",
        target="onnx",
        exit_rule=rule,
        operating_points=points,
        echo=lambda s: None,
    )
    engine = Engine.load(tmp_path / "b", "onnxruntime")
    assert {p.moe_tau for p in engine.points} == set(taus)
    assert manifest["moe"]["tau_input"] == "moe_tau"
    point = max((p for p in engine.points if p.moe_tau == 0.8), key=lambda p: p.accuracy)
    sparse = engine.run(splits.test.x.numpy(), point=point)
    dense = engine.run(splits.test.x.numpy(), point=OperatingPoint("all", (np.inf,), moe_tau=0.0))
    assert sparse.experts.mean() < dense.experts.mean() == 8.0  # 64 / 8 experts, all running


def test_a_converted_hf_classifier_exports_with_tokenized_rows_of_its_data(tmp_path, monkeypatch):
    from hf_folders import model_folder, texts, write_jsonl

    from ponder._cli.pretrained import convert_pretrained
    from ponder.export import _checkpoint

    folder = model_folder(tmp_path, "bert")
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    convert_pretrained(
        folder, data, tmp_path / "ckpt", exits=2, epochs=1, progress=False, echo=lambda s: None
    )
    seen = {}

    def fake_export(model, sample_inputs, out, **kwargs):  # export_bundle's own tests cover it
        seen.update(model=model, inputs=sample_inputs, **kwargs)
        return {"fake": True}

    monkeypatch.setattr(_checkpoint, "export_bundle", fake_export)
    monkeypatch.setattr(_checkpoint, "_summary", lambda manifest, out, echo: manifest)
    assert _checkpoint.export_checkpoint(tmp_path / "ckpt", tmp_path / "b", echo=lambda s: None)
    x = seen["inputs"]
    assert sorted(x) == ["attention_mask", "input_ids"] and x["input_ids"].shape[0] == 5
    assert seen["exit_rule"]["name"] == "max_prob" and seen["operating_points"]
    assert seen["config"]["checkpoint"]["extra"]["data_files"]["train"] == str(data.resolve())
    assert seen["model"].ponder_exits.num_exits == 3
    seen.clear()
    _checkpoint.export_checkpoint(tmp_path / "ckpt", tmp_path / "c", quantize="int8")
    assert seen["quantize"] == "int8"  # calibrated and checked on keyword batches of the data
    assert all(sorted(b) == ["attention_mask", "input_ids"] for b in seen["calibration"])
    held_x, held_y = seen["held_out"]
    assert sorted(held_x) == ["attention_mask", "input_ids"]
    assert held_x["input_ids"].shape[0] == len(held_y) > 0


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_ponder_convert_then_export_runs_on_the_engine(tmp_path, family):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")
    from hf_folders import model_folder, texts, write_jsonl

    from ponder._cli.pretrained import convert_pretrained
    from ponder.export import export_checkpoint

    folder = model_folder(tmp_path, family)
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    quiet = lambda s: None  # noqa: E731
    convert_pretrained(
        folder, data, tmp_path / "ckpt", exits=2, epochs=1, progress=False, echo=quiet
    )
    manifest = export_checkpoint(tmp_path / "ckpt", tmp_path / "b", target="onnx", echo=quiet)
    assert len(manifest["stages"]) == 3 and manifest["exit_rule"]["name"] == "max_prob"
    engine = Engine.load(tmp_path / "b", "onnxruntime")
    assert engine.points  # operating points measured on the recorded calibration split
