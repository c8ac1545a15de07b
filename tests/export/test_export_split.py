"""Split bundles: the device half (ONNX, ExecuTorch) and the cloud half (tail/tail.onnx) run by
the torch-free `SplitBundle` through real payloads equal the eager split model per keep level
and codec; files and payloads from another export are refused."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_models import hf_alone, hf_classifier, hf_inputs, inputs, make

import ponder
from ponder import BundleError, ConfigError, PayloadError
from ponder._cli import main
from ponder.export import export_split
from ponder.runtime import Engine, SplitBundle, verify_split

QUIET = {"echo": lambda line: None}


def _split(model, block=1, **config):
    return ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=block, **config))


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory):
    model, x = make("vit"), inputs("vit")
    converted = _split(model, keep=0.5, codec="int8")
    out = tmp_path_factory.mktemp("split") / "vit"
    manifest = export_split(converted, x, out, target="onnx", codecs=["fp32", "int8"], **QUIET)
    return out, manifest, converted, x


def test_a_split_bundle_describes_its_halves_and_keeps(vit_bundle):
    out, manifest, _, _ = vit_bundle
    split = manifest["split"]
    assert split["block"] == 1 and split["selector"] == "cls" and split["anchor"] == "first"
    assert split["keeps"] == [1.0, 0.5, 0.25, 0.1]
    assert split["codecs"] == ["fp32", "int8"]
    assert len(split["params"]["device_sha256"]) == 64
    assert manifest["tail"]["inputs"] == ["tokens"]  # a ViT reads no mask
    on_disk = json.loads((out / "split.json").read_text())
    assert on_disk == manifest
    assert set(on_disk["files"]) == {"edge.onnx", "tail/tail.onnx", "samples.npz"}
    # the model without the split, for the requests the device answers itself
    assert manifest["local"]["folder"] == "local"
    local = Engine.load(out / "local", "onnxruntime")
    with torch.no_grad():
        want = make("vit")(inputs("vit")).argmax(-1).numpy()
    np.testing.assert_array_equal(local.run(inputs("vit").numpy()).prediction, want)


def test_exits_before_the_split_answer_locally(tmp_path):
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    ponder.convert_(model, ponder.SplitConfig(block=2, keep=0.5))
    manifest = export_split(model, x, tmp_path / "b", target="onnx", codecs=["int8"], **QUIET)
    local = Engine.load(tmp_path / "b" / "local", "onnxruntime")
    assert len(local.bundle.manifest.stages) == 2  # an exit stage, then the rest
    checked = verify_split(tmp_path / "b", **QUIET)
    assert any(r.format == "onnx" and r.stage == 1 for r in checked.rows)  # local stages ran
    assert manifest["split"]["block"] == 2


def test_both_halves_through_payloads_equal_the_eager_split_model(vit_bundle):
    out, _, converted, x = vit_bundle
    bundle = SplitBundle.load(out)
    for keep in (1.0, 0.5, 0.25):
        eager = copy.deepcopy(converted)
        link = ponder.split_link(eager)
        link.config = ponder.SplitConfig(block=1, keep=keep, codec="int8")
        with torch.no_grad():
            want = ponder.split_model(eager, {"x": x})(x=x).numpy()
        payloads = bundle.send({"x": x.numpy()}, keep, "int8")
        assert len(payloads) == len(x)
        np.testing.assert_allclose(bundle.receive(payloads), want, rtol=1e-4, atol=1e-5)
        # the cloud batches what it gets: one payload alone gives that row's answer
        np.testing.assert_allclose(bundle.receive(payloads[2:3])[0], want[2], rtol=1e-4, atol=1e-5)


def test_verify_checks_every_keep_and_codec_and_catches_a_changed_file(vit_bundle, tmp_path):
    out, manifest, _, _ = vit_bundle
    checked = verify_split(out, **QUIET)
    labels = {r.output for r in checked.rows}
    for keep in ("1", "0.5", "0.25", "0.1"):
        assert {f"logits[{keep}_fp32]", f"logits[{keep}_int8]"} <= labels
    assert "kept positions[0.1_int8]" in labels
    assert all(r.ok for r in checked.rows)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in manifest["files"]:
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_bytes((out / name).read_bytes())
    (broken / "split.json").write_text((out / "split.json").read_text())
    tail = broken / "tail" / "tail.onnx"
    data = bytearray(tail.read_bytes())
    data[-10] ^= 0xFF
    tail.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        verify_split(broken, **QUIET)
    (broken / "split.json").unlink()
    with pytest.raises(BundleError, match="not a split bundle"):
        SplitBundle.load(broken)


def test_the_cloud_refuses_payloads_of_another_device_half(vit_bundle, tmp_path):
    out, _, _, x = vit_bundle
    other = _split(make("vit", seed=1), keep=0.5, codec="int8")
    export_split(other, x, tmp_path / "other", target="onnx", codecs=["int8"], **QUIET)
    payloads = SplitBundle.load(tmp_path / "other").send({"x": x.numpy()}, 0.5, "int8")
    with pytest.raises(PayloadError, match="device_sha256"):
        SplitBundle.load(out).receive(payloads)
    with pytest.raises(ConfigError, match="codec"):
        SplitBundle.load(out).send({"x": x.numpy()}, 0.5, "int4")
    with pytest.raises(ConfigError, match="missing inputs"):
        SplitBundle.load(out).send({"pixels": x.numpy()}, 0.5, "int8")


@pytest.mark.slow
def test_a_padded_text_model_on_executorch_and_onnx(tmp_path):
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    converted = _split(model, keep=0.5, codec="int8")
    manifest = export_split(converted, x, tmp_path / "b", codecs=["fp32", "int4-g32"], **QUIET)
    assert manifest["tail"]["inputs"] == ["tokens", "attention_mask"]
    assert "edge.pte" in manifest["files"]
    checked = verify_split(tmp_path / "b", require_all=True, **QUIET)
    assert {r.format for r in checked.rows} >= {"onnx+tail", "executorch+tail"}
    on_et = SplitBundle.load(tmp_path / "b", edge="executorch")
    batch = on_et.run({k: v.numpy() for k, v in x.items()}, 0.5, "fp32")
    alone = on_et.run({k: v.numpy() for k, v in hf_alone(x, 0).items()}, 0.5, "fp32")
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-4, atol=1e-5)


def test_ponder_export_split_and_verify_from_a_checkpoint(tmp_path):
    model = ponder.models.create_model("digits_vit", width=16, num_blocks=3, heads=2)
    ponder.save(model, tmp_path / "ckpt", extra={"data": {"name": "digits"}})
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["export", str(tmp_path / "ckpt"), "--split", "1", "--target", "onnx",
         "--out", str(tmp_path / "b")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ponder verify" in result.output
    verified = runner.invoke(main, ["verify", str(tmp_path / "b")])
    assert verified.exit_code == 0, verified.output
    assert "4 keep levels x 5 codecs" in verified.output and "bundle OK" in verified.output
    assert "for local answers" in verified.output
    again = runner.invoke(
        main, ["export", str(tmp_path / "ckpt"), "--split", "1", "--quantize", "int8",
               "--out", str(tmp_path / "c")],
    )  # fmt: skip
    assert again.exit_code != 0 and "split bundle takes" in again.output


@pytest.mark.slow
def test_a_converted_hf_classifier_exports_split_with_its_exits_local(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")
    from hf_folders import model_folder, texts, write_jsonl

    from ponder._cli.pretrained import convert_pretrained
    from ponder.export import export_checkpoint

    folder = model_folder(tmp_path, "bert")
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    convert_pretrained(folder, data, tmp_path / "ckpt", exits=1, epochs=1, progress=False, **QUIET)
    manifest = export_checkpoint(tmp_path / "ckpt", tmp_path / "b", target="onnx", split=2, **QUIET)
    assert manifest["split"]["block"] == 2 and manifest["tail"]["inputs"][1] == "attention_mask"
    local = Engine.load(tmp_path / "b" / "local", "onnxruntime")
    assert len(local.bundle.manifest.stages) == 2 and local.points  # the exit, with its points
    assert all(r.ok for r in verify_split(tmp_path / "b", **QUIET).rows)
