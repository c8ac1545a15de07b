"""Writing bundles: stages, both formats against eager, manifest contents, the model untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_models import moe_mlp, ztw_cnn
from tiny_models import inputs

import ponder
from ponder.export._stages.plan import plan_stages, run_chain, run_stages
from ponder.runtime import Bundle
from ponder.runtime._backends.base import OnnxRuntimeBackend
from ponder.runtime._backends.executorch import ExecuTorchBackend

CPU = ["CPUExecutionProvider"]


def _chain_pte(bundle: Bundle, x: torch.Tensor) -> dict:
    """Run every method in order, feeding each the named outputs of the earlier ones."""
    io = [([t.name for t in s.inputs], [t.name for t in s.outputs]) for s in bundle.manifest.stages]
    return run_chain(ExecuTorchBackend(bundle), io, {"x": x})


def test_stages_reproduce_the_model_and_its_exits():
    model = ztw_cnn()
    x = inputs("conv2d", batch=6)
    runs = run_stages(plan_stages(model), {"x": x})
    torch.testing.assert_close(runs[-1]["outputs"]["logits"], model(x), rtol=0, atol=0)
    logp = ponder.exit_outputs(model, x, torch.zeros(6, dtype=torch.long)).logp  # [K, B, C]
    for k in range(2):
        torch.testing.assert_close(
            runs[k]["outputs"][f"exit_logp_{k}"].numpy(), logp[k], rtol=1e-5, atol=1e-6
        )


def test_bundle_files_and_manifest(ztw_bundle):
    bundle = Bundle.open(ztw_bundle)
    m = bundle.manifest
    assert [s.method for s in m.stages] == ["stage_0", "stage_1", "stage_2"]
    assert [s.exit for s in m.stages] == [True, True, False]
    assert m.stages[1].inputs[1].name == "head_logits_0"  # ZTW cascade wiring
    assert m.stages[-1].cumulative_flops == sum(s.flops for s in m.stages) > 0
    assert set(m.files) == {
        "model.pte",
        "samples.npz",
        "validation.json",
        *(f"onnx/stage_{i}.onnx" for i in range(3)),
    }
    report = json.loads((ztw_bundle / "validation.json").read_text())
    assert report["ok"] and {c["format"] for c in report["comparisons"]} == {"pte", "onnx"}
    assert len(report["comparisons"]) == 2 * (3 + 3 + 1)  # outputs per stage, per format
    assert ExecuTorchBackend(bundle).metadata()["methods"] == ["stage_0", "stage_1", "stage_2"]


def test_weights_stored_once(ztw_bundle):
    model = ztw_cnn()
    one_copy = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    size = (ztw_bundle / "model.pte").stat().st_size
    # XNNPACK packs its own layout, plus the program's code and metadata (~tens of kB here)
    assert one_copy < size < one_copy + 64_000


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_pte_chain_matches_eager_at_any_batch(ztw_bundle, batch):
    model = ztw_cnn()
    x = inputs("conv2d", batch=batch, seed=3)
    got = _chain_pte(Bundle.open(ztw_bundle), x)
    torch.testing.assert_close(torch.from_numpy(got["logits"]), model(x), rtol=1e-4, atol=1e-4)


def test_onnx_stages_run_with_a_shrinking_batch(ztw_bundle):
    """Rows that exit leave the batch: the next stage gets fewer rows than the previous one."""
    bundle = Bundle.open(ztw_bundle)
    runner = OnnxRuntimeBackend(bundle, providers=CPU)
    x = inputs("conv2d", batch=8, seed=4).numpy()
    first = runner.run_stage(0, {"x": x})
    keep = np.array([0, 2, 5])
    second = runner.run_stage(
        1, {"hidden_0": first["hidden_0"][keep], "head_logits_0": first["head_logits_0"][keep]}
    )
    alone = runner.run_stage(
        1, {"hidden_0": first["hidden_0"], "head_logits_0": first["head_logits_0"]}
    )
    np.testing.assert_allclose(
        second["exit_logp_1"], alone["exit_logp_1"][keep], rtol=1e-5, atol=1e-5
    )


def test_export_leaves_the_model_untouched(tmp_path):
    from ponder.export import export_bundle

    model = moe_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 12)
    reference = model(x)
    export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda s: None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
    assert all(layer.backend == "auto" for layer in ponder._moe.config.moe_layers(model).values())
    result = ponder.infer(model, x, thresholds=0.5)  # exit hooks still work
    assert result.prediction.shape == (4,)


def test_moe_bundle_runs_grouped_by_default(moe_bundle):
    m = Bundle.open(moe_bundle).manifest
    assert [layer["experts"] for layer in m.moe["layers"]] == [4, 4]
    assert [layer["path"] for layer in m.moe["layers"]] == ["0.0", "1.0"]
    assert (
        m.moe["mode"] == "grouped"
        and "unselected experts cost nothing" in m.moe["execution"]["pte"]
    )


def test_masked_moe_export_says_no_work_is_skipped(tmp_path):
    from ponder.export import export_bundle

    manifest = export_bundle(
        moe_mlp(),
        torch.randn(4, 12),
        tmp_path / "m",
        target="onnx",
        moe="masked",
        echo=lambda s: None,
    )
    assert manifest["moe"]["mode"] == "masked"
    assert "no work is skipped" in manifest["moe"]["execution"]["onnx"]
    with pytest.raises(ponder.ConfigError, match="moe="):
        export_bundle(moe_mlp(), torch.randn(4, 12), tmp_path / "x", moe="sparse")


def test_onnx_only_bundle_has_no_program(tmp_path):
    from ponder.export import export_bundle

    out = tmp_path / "onnx-only"
    (out / "onnx_int8").mkdir(parents=True)  # left by an earlier export with int8
    (out / "model_int8.pte").write_bytes(b"stale")
    (out / "notes.txt").write_text("the user's own file")
    export_bundle(moe_mlp(), torch.randn(3, 12), out, target="onnx", echo=lambda s: None)
    bundle = Bundle.open(out)
    assert "model.pte" not in bundle.manifest.files
    assert not (out / "model_int8.pte").exists() and not (out / "onnx_int8").exists()
    assert (out / "notes.txt").exists()
    with pytest.raises(ponder.BundleError, match="no ExecuTorch program"):
        _ = bundle.pte_path


def test_bad_arguments_are_refused(tmp_path):
    from ponder.export import export_bundle

    model = moe_mlp()
    with pytest.raises(ponder.ConfigError, match="rows"):
        export_bundle(model, torch.randn(1, 12), tmp_path / "a")
    with pytest.raises(ponder.ConfigError, match="target"):
        export_bundle(model, torch.randn(3, 12), tmp_path / "b", target="tflite")
    with pytest.raises(
        ponder.UnsupportedModelError, match=r"could not trace TinyBert on inputs \['x'\]"
    ):
        export_bundle(make_bert(), torch.randn(3, 12), tmp_path / "c")


def make_bert():
    from tiny_models import make

    return make("bert")


def test_text_encoder_exports_with_dynamic_batch_and_length(tmp_path):
    """A BERT encoder (MoE FFNs) -> one stage: token ids and mask -> sentence embedding."""
    from tiny_models import hf_bert

    from ponder.export import export_bundle

    model = hf_bert()
    ponder.convert_(model, ponder.MoEConfig(expert_size=16, tau=0.2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 6:] = 0
    manifest = export_bundle(
        model, {"input_ids": ids, "attention_mask": mask}, tmp_path / "b", echo=lambda s: None
    )
    assert manifest["task"] == "embedding" and manifest["classes"] is None
    assert manifest["inputs"][0]["shape"] == ["batch", "tokens"]
    assert manifest["stages"][0]["outputs"][0]["shape"] == ["batch", 32]
    assert len(manifest["moe"]["layers"]) == 2
    assert manifest["moe"]["tau_input"] == "moe_tau"  # the device can change tau per request
    assert [t["name"] for t in manifest["stages"][0]["inputs"]][-1] == "moe_tau"
    tau = torch.tensor([0.2])
    bundle = Bundle.open(tmp_path / "b")
    runner = OnnxRuntimeBackend(bundle, providers=CPU)
    pte = ExecuTorchBackend(bundle)
    for batch, length in ((1, 3), (5, 17)):
        ids = torch.randint(0, 100, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        expected = run_stages(plan_stages(model), {"input_ids": ids, "attention_mask": mask})
        want = expected[0]["outputs"]["sentence_embedding"].numpy()
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "moe_tau": tau.numpy()}
        got = runner.run_stage(0, feeds)
        np.testing.assert_allclose(got["sentence_embedding"], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            pte.run_stage(0, {"input_ids": ids, "attention_mask": mask, "moe_tau": tau})[
                "sentence_embedding"
            ].numpy(),
            want,
            rtol=1e-4,
            atol=1e-5,
        )
