"""Transformers with exits, exported: BERT-, GPT-2- and ViT-like models (hand-written and Hugging
Face) are traced whole, cut after their exit blocks, written as ONNX (and one as ExecuTorch),
and the engine's per-sample exits on the bundle equal eager `ponder.infer`."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import UserHead, hf_alone, hf_classifier, hf_inputs, inputs, make

import ponder
from ponder.export import export_bundle, verify_bundle
from ponder.runtime import Engine, OperatingPoint

pytestmark = pytest.mark.slow

# (family, exit style): tiny hand-written models and the Hugging Face wrappers
FAMILIES = [
    ("bert", "sdn"),
    ("gpt", "ztw"),
    ("vit", "ztw"),
    ("hf_bert", "ztw"),
    ("hf_gpt2", "sdn"),
    ("hf_vit", "sdn"),
    ("hf_distilbert", "ztw"),
    ("hf_roberta", "sdn"),
    ("base_bert", "ztw"),  # plain HF base models with the user's own head
    ("base_vit", "sdn"),
]


def _model(family: str, style: str, padded: bool = True):
    if family.startswith("base_"):
        model, x = UserHead(family[5:]).eval(), hf_inputs(family[5:], padded=padded)
    elif family.startswith("hf_"):
        model, x = hf_classifier(family[3:]), hf_inputs(family[3:], padded=padded)
    else:
        model, x = make(family), inputs(family)
    return ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2, style=style)), x


def _points(model, x) -> list[float]:
    """Thresholds at which samples leave at every stage: 0, the medians of each exit's max
    probability, and one no sample reaches."""
    best = np.exp(ponder.exit_outputs(model, x).logp).max(-1)  # [K, N]
    return [0.0, float(np.median(best[0])), float(np.median(best[1])), 1.1]


def _engine_equals_eager(model, x, engine: Engine) -> list[list[int]]:
    feeds = {k: v.numpy() for k, v in (x.items() if isinstance(x, dict) else {"x": x}.items())}
    seen = []
    for t in _points(model, x):
        got = engine.run(feeds, point=OperatingPoint("t", (t,) * (len(engine.stages) - 1)))
        eager = ponder.infer(model, x, thresholds=t)
        np.testing.assert_array_equal(got.exit_stage, eager.exit_index.numpy())
        np.testing.assert_array_equal(got.prediction, eager.prediction.numpy())
        seen.append(got.exit_stage.tolist())
    return seen


@pytest.mark.parametrize(("family", "style"), FAMILIES)
def test_onnx_bundle_runs_per_sample_exits_like_eager(family, style, tmp_path):
    if family.startswith(("hf_", "base_")):
        tiny_models._transformers()
    model, x = _model(family, style)
    manifest = export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    assert [s["exit"] for s in manifest["stages"]] == [True, True, False]
    assert manifest["stages"][0]["outputs"][0]["name"] == "hidden_0"
    seen = _engine_equals_eager(model, x, Engine.load(tmp_path / "b", "onnxruntime"))
    # at some threshold samples of one batch leave at different stages (the batch shrinks)
    assert any(len(set(row)) > 1 for row in seen), seen
    assert verify_bundle(tmp_path / "b", echo=lambda _: None)


def test_padded_rows_answer_as_each_row_alone(tmp_path):
    tiny_models._transformers()
    model, x = _model("hf_bert", "ztw")
    export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    engine = Engine.load(tmp_path / "b", "onnxruntime")
    t = _points(model, x)[1]
    point = OperatingPoint("t", (t, t))
    batch = engine.run({k: v.numpy() for k, v in x.items()}, point=point)
    for row in range(len(x["input_ids"])):
        alone = engine.run({k: v.numpy() for k, v in hf_alone(x, row).items()}, point=point)
        assert alone.exit_stage[0] == batch.exit_stage[row]
        assert alone.prediction[0] == batch.prediction[row]


@pytest.mark.parametrize(("family", "pooling"), [("base_bert", "mean"), ("hf_gpt2", "last")])
def test_later_exits_reuse_the_pooling_weights_the_first_builds(family, pooling, tmp_path):
    """Mean and last-token pooling over the mask are built once, by exit 0, and read by exit 1:
    the later stages take `pool_weights` [B, 1, T] instead of rebuilding them from
    `attention_mask`, and padded batches still answer as eager."""
    tiny_models._transformers()
    if family.startswith("base_"):
        model, x = UserHead(family[5:]).eval(), hf_inputs(family[5:], padded=True)
    else:
        model, x = hf_classifier(family[3:]), hf_inputs(family[3:], padded=True)
    config = ponder.EarlyExitConfig(num_exits=2, style="ztw", pooling=pooling)
    model = ponder.convert_(model, config)
    manifest = export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    ins = [[t["name"] for t in s["inputs"]] for s in manifest["stages"]]
    outs = [[t["name"] for t in s["outputs"]] for s in manifest["stages"]]
    assert "pool_weights" in outs[0] and "pool_weights" not in outs[1], outs
    assert "pool_weights" in ins[1] and "pool_weights" not in ins[2], ins
    seen = _engine_equals_eager(model, x, Engine.load(tmp_path / "b", "onnxruntime"))
    assert any(len(set(row)) > 1 for row in seen), seen


def test_executorch_program_of_a_transformer_runs_like_eager(tmp_path):
    model, x = _model("bert", "ztw")
    manifest = export_bundle(model, x, tmp_path / "b", target="xnnpack", echo=lambda _: None)
    assert [s["method"] for s in manifest["stages"]] == ["stage_0", "stage_1", "stage_2"]
    _engine_equals_eager(model, x, Engine.load(tmp_path / "b", "executorch"))
    one = {k: v[:1].numpy() for k, v in x.items()}  # the batch is dynamic down to one row
    got = Engine.load(tmp_path / "b", "executorch").run(one)
    assert got.prediction.shape == (1,)


def test_cutting_a_transformer_needs_example_inputs():
    from ponder.export._stages.plan import plan_stages

    model, _ = _model("vit", "sdn")
    with pytest.raises(ponder.ConfigError, match="pass example_inputs"):
        plan_stages(model)


def test_a_transformer_without_exits_is_one_stage(tmp_path):
    tiny_models._transformers()
    model, x = hf_classifier("gpt2"), hf_inputs("gpt2", padded=True)
    manifest = export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    assert [s["exit"] for s in manifest["stages"]] == [False]
    got = Engine.load(tmp_path / "b", "onnxruntime").run({k: v.numpy() for k, v in x.items()})
    np.testing.assert_array_equal(got.prediction, model(**x).logits.argmax(-1).numpy())


def test_moe_and_exits_in_one_transformer_take_tau_as_a_stage_input(tmp_path):
    model, x = make("bert"), inputs("bert")
    model = ponder.convert_(model, ponder.MoEConfig(expert_size=8), example_inputs=x)
    model = ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2, style="ztw"))
    manifest = export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    assert manifest["moe"]["tau_input"] == "moe_tau"
    assert {layer["stage"] for layer in manifest["moe"]["layers"]} == {0, 1, 2}
    engine = Engine.load(tmp_path / "b", "onnxruntime")
    feeds = {k: v.numpy() for k, v in x.items()}
    outputs = []
    for tau in (0.9, 0.5):  # fewer experts at the lower tau: the answers follow the eager gate
        ponder.set_gate_(model, "dynamic_k", tau=tau)
        t = _points(model, x)[1]
        got = engine.run(feeds, point=OperatingPoint("t", (t, t), moe_tau=tau))
        eager = ponder.infer(model, x, thresholds=t)
        np.testing.assert_array_equal(got.exit_stage, eager.exit_index.numpy())
        np.testing.assert_array_equal(got.prediction, eager.prediction.numpy())
        np.testing.assert_allclose(got.output, eager.logprobs.numpy(), rtol=1e-4, atol=1e-4)
        outputs.append(got.output)
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)  # tau reached the MoE layers
    # every stage reports the experts each sample's tokens ran, as the eager layers counted
    for k, stage in enumerate(manifest["stages"]):
        assert f"experts_{k}" in [o["name"] for o in stage["outputs"]]
    full = engine.run(feeds, point=OperatingPoint("full", (2.0, 2.0), moe_tau=0.5))
    ponder.infer(model, x, thresholds=2.0)  # no max-prob reaches 2: every layer runs
    batch = len(x["input_ids"])
    per_layer = [c.reshape(batch, -1).float().mean(1) for c in ponder.expert_counts(model).values()]
    np.testing.assert_allclose(full.experts, torch.stack(per_layer).mean(0).numpy(), rtol=1e-5)
    assert full.experts.min() < full.experts.max()  # samples differ


def test_int8_files_of_a_transformer_report_every_exit(tmp_path):
    model, _ = _model("bert", "sdn")
    x = inputs("bert", batch=16)
    y = torch.randint(0, tiny_models.CLASSES, (16,))
    manifest = export_bundle(
        model,
        x,
        tmp_path / "b",
        target="onnx",
        quantize="int8",
        calibration=[x],
        held_out=(x, y),
        echo=lambda _: None,
    )
    exits = manifest["quantization"]["accuracy"]["onnx"]["exits"]
    assert [e["output"] for e in exits] == ["exit_logp_0", "exit_logp_1", "logits"]
    assert all(0.0 <= e["agreement"] <= 1.0 for e in exits)
    got = Engine.load(tmp_path / "b", "onnxruntime", int8=True).run(
        {k: v.numpy() for k, v in x.items()}
    )
    assert got.prediction.shape == (16,)


class _TorchEncoder(torch.nn.Module):
    """A classifier on torch's own nn.TransformerEncoder: blocks found at `encoder.layers`."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(6, 16)
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 4)
        self.head = torch.nn.Linear(16, tiny_models.CLASSES)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))  # [B, T, 6] -> [B, C]


def test_torch_transformer_encoder_layers_are_cut_too(tmp_path):
    torch.manual_seed(0)
    model = ponder.convert_(_TorchEncoder().eval(), ponder.EarlyExitConfig(num_exits=2))
    x = torch.randn(6, 7, 6)
    export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    seen = _engine_equals_eager(model, x, Engine.load(tmp_path / "b", "onnxruntime"))
    assert any(len(set(row)) > 1 for row in seen), seen


def test_batch_and_token_bounds_are_export_options_the_engine_enforces(tmp_path):
    from ponder.runtime._engine.inputs import InputError

    model, x = _model("bert", "sdn")
    manifest = export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)
    assert manifest["config"]["export"]["max_batch"] == 64  # transformers' default
    assert manifest["config"]["export"]["max_tokens"] == 128
    manifest = export_bundle(
        model, x, tmp_path / "b", target="onnx", max_tokens=10, max_batch=8, echo=lambda _: None
    )
    assert manifest["config"]["export"]["max_tokens"] == 10
    engine = Engine.load(tmp_path / "b", "onnxruntime")
    long = {k: np.concatenate([v.numpy()] * 2, axis=1) for k, v in x.items()}  # twice the tokens
    with pytest.raises(
        InputError, match=r"has \d+ tokens; this bundle was exported for at most 10"
    ):
        engine.run(long)
    many = {k: np.concatenate([v.numpy()] * 3) for k, v in x.items()}  # 18 rows: split by 8
    split = engine.run(many)
    assert split.prediction.shape == (18,) and max(split.stage_rows) == 8
    with pytest.raises(ponder.ConfigError, match=r"has \d+ tokens, more than the 6"):
        export_bundle(model, x, tmp_path / "c", target="onnx", max_tokens=6, echo=lambda _: None)
