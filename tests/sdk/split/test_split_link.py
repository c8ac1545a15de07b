"""The eager split link: the split block's output goes through the real codec and payload both
ways, so the model computes what the cloud half would, and every payload's bytes are counted."""

import copy

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import hf_alone, hf_classifier, hf_inputs, inputs, make

import ponder
from ponder import ConfigError
from ponder.runtime import encode_payload


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min().item()


def test_fp32_link_changes_nothing_and_int8_little():
    model, x = make("vit"), inputs("vit")
    plain = model(x)
    exact = ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=1, codec="fp32"))
    torch.testing.assert_close(exact(x), plain, rtol=0, atol=0)
    int8 = ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=1, codec="int8"))
    out = int8(x)
    assert not torch.equal(out, plain)
    assert _cosine(out, plain) > 0.999


def test_bytes_per_sample_are_the_real_payloads_of_the_real_tokens():
    """A padded row sends its real tokens only: as many bytes as the row alone, and the same
    answer; the count is a real payload's length."""
    tiny_models._transformers()
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    hidden = {}
    block = model.bert.encoder.layer[1]

    def grab(module, args, output):
        hidden["h"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = block.register_forward_hook(grab)
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int8", zstd_level=None))
    batch = model(**x).logits
    handle.remove()
    sizes = ponder.bytes_per_sample(model)
    link = ponder.split_link(model)
    real = x["attention_mask"].bool()
    for row in range(len(sizes)):
        tokens = hidden["h"][row, real[row]][None].numpy()
        payload = encode_payload({"tokens": tokens}, "int8", params=link.params, zstd_level=None)
        assert sizes[row] == len(payload)
        alone = model(**hf_alone(x, row)).logits
        assert ponder.bytes_per_sample(model)[0] == sizes[row]
        torch.testing.assert_close(alone[0], batch[row], rtol=1e-4, atol=1e-5)
    assert len(set(sizes.tolist())) > 1  # rows of different lengths send different bytes


def test_training_through_the_link_sends_gradients_back_compressed():
    model, x = make("vit"), inputs("vit")
    labels = torch.arange(len(x)) % 3
    ref = copy.deepcopy(model)
    split = ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=1, codec="fp32"))
    for m in (ref, split):
        torch.nn.functional.cross_entropy(m(x), labels).backward()
    first = "blocks.0"  # a device-side block: its gradient crossed the link
    for (name, p), q in zip(ref.named_parameters(), split.parameters(), strict=False):
        if name.startswith(first):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6)
    link = ponder.split_link(split)
    assert link.bytes.up > 0 and link.bytes.down == sum(link.bytes.last)
    int8 = ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=1, codec="int8"))
    torch.nn.functional.cross_entropy(int8(x), labels).backward()
    got = dict(int8.named_parameters())
    for name, p in ref.named_parameters():
        if name.startswith(first) and p.grad is not None:
            assert _cosine(got[name].grad[None], p.grad[None]) > 0.99, name


def test_bad_splits_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="codec"):
        ponder.SplitConfig(block=1, codec="int3")
    with pytest.raises(ConfigError, match="keep must be in"):
        ponder.SplitConfig(block=1, keep=0.0)
    model = make("vit")
    n = len(model.blocks)
    with pytest.raises(ConfigError, match=f"split after block 0..{n - 2}"):
        ponder.convert_(model, ponder.SplitConfig(block=n - 1))
    ponder.convert_(model, ponder.SplitConfig(block=0))
    with pytest.raises(ConfigError, match="already has a split"):
        ponder.convert_(model, ponder.SplitConfig(block=1))
    with pytest.raises(ConfigError, match="no split"):
        ponder.split_link(make("vit"))


def test_a_split_model_is_not_exported_as_if_it_had_none(tmp_path):
    from ponder.export import export_bundle

    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1))
    with pytest.raises(ConfigError, match="edge-cloud split"):
        export_bundle(model, x, tmp_path / "b", target="onnx", echo=lambda _: None)


def test_the_split_survives_a_checkpoint(tmp_path):
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int4-g32"))
    before = model(x)
    ponder.save(model, tmp_path / "ckpt")
    loaded = ponder.load(tmp_path / "ckpt", model=make("vit"))
    torch.testing.assert_close(loaded(x), before, rtol=0, atol=0)
    assert np.array_equal(ponder.bytes_per_sample(loaded), ponder.bytes_per_sample(model))


def test_rows_that_leave_at_a_device_side_exit_send_nothing():
    """Exits before the split run on the device: during ponder.infer a row that leaves there
    sends no payload, and the rows that cross send their real tokens only."""
    tiny_models._transformers()
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    ponder.convert_(model, ponder.EarlyExitConfig(exits=(0,), style="sdn"))
    for p in model.ponder_exits.parameters():  # spread the exit's confidences
        torch.nn.init.normal_(p, std=3.0)
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int8", zstd_level=None))
    best = np.exp(ponder.exit_outputs(model, x).logp[0]).max(-1)
    threshold = float(np.median(best))
    result = ponder.infer(model, x, thresholds=threshold)
    crossed = (result.exit_index != 0).numpy()
    assert 0 < crossed.sum() < len(crossed)
    sizes = ponder.bytes_per_sample(model)
    assert len(sizes) == crossed.sum()
    real = x["attention_mask"].bool()
    hidden = {}

    def grab(module, args, output):
        hidden["h"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = model.bert.encoder.layer[1].register_forward_hook(grab, prepend=True)
    with torch.no_grad():
        model(**x)
    handle.remove()
    link = ponder.split_link(model)
    want = [
        len(encode_payload({"tokens": hidden["h"][r, real[r]][None].numpy()}, "int8",
                           params=link.params, zstd_level=None))
        for r in np.flatnonzero(crossed)
    ]  # fmt: skip
    assert sizes.tolist() == want


def test_exits_go_on_before_the_split():
    model = make("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1))
    with pytest.raises(ConfigError, match="add the exits first, then the split"):
        ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))


@pytest.mark.parametrize("codec", ["fp32", "fp16", "int8", "int4", "int4-g32"])
def test_the_traced_codecs_equal_the_runtime_ones_value_for_value(codec):
    """torch.export runs the link as torch ops: they must give what the numpy codecs give."""
    from ponder._split.trace import traced_round_trip
    from ponder.runtime import get_codec

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 70, generator=g) * torch.logspace(-3, 3, 70)  # wide-ranging channels
    real = torch.ones(3, 5, dtype=torch.bool)
    real[1, 3:] = False
    c = get_codec(codec)
    want = torch.from_numpy(c.decode(c.encode(x.numpy()))) * real[..., None]
    torch.testing.assert_close(traced_round_trip(x, real, codec), want, rtol=0, atol=0)


def test_a_split_model_traces_with_the_codec_in_its_graph():
    tiny_models._transformers()
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int4"))
    program = torch.export.export(model, (), dict(x), strict=False)
    eager = model(**x).logits
    torch.testing.assert_close(program.module()(**x).logits, eager, rtol=1e-5, atol=1e-5)
    plain = hf_classifier("bert")(**x).logits
    assert not torch.allclose(eager, plain, atol=1e-3)  # int4 changed the answer, in both
