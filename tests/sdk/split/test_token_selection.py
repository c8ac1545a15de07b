"""Token selection at the split (`ponder.split_model`): the model cut in two at its split block,
each sample keeping its pooling token and its top-ranked other tokens, in order; the cloud half
runs on the kept tokens alone, as if the others had never existed."""

import copy
import math

import numpy as np
import pytest
import torch
from tiny_models import hf_alone, hf_classifier, hf_inputs, inputs, make

import ponder
from ponder import ConfigError, UnsupportedModelError
from ponder._split.program import attention_ranking, select_tokens
from ponder.runtime import decode_payload


def _split(model, block=1, **config):
    return ponder.convert_(copy.deepcopy(model), ponder.SplitConfig(block=block, **config))


def test_select_tokens_keeps_the_anchor_and_the_best_in_order_and_pads_with_padding():
    real = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    scores = torch.tensor(
        [[0.0, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.05], [0.0, 0.1, 0.9, 5.0, 5.0, 5.0, 5.0, 5.0]]
    )
    index, kept = select_tokens(scores, real, 0.5)  # ceil(0.5 * 8) = 4, ceil(0.5 * 3) = 2
    assert index.tolist()[0] == [0, 1, 3, 5]  # the class token and the top 3, in order
    assert kept.tolist() == [[True] * 4, [True, True, False, False]]
    assert index.tolist()[1][:2] == [0, 2]  # padding scores do not count
    assert not real[1, index[1, 2:]].any()  # its padding slots point at padding positions
    last, _ = select_tokens(scores, real, 0.25, anchor="last")
    assert last.tolist()[0] == [1, 7]  # the last real token is the anchor
    assert last.tolist()[1][0] == 2
    index, kept = select_tokens(scores, real, 0.01)  # at least one token: the anchor
    assert index[:, 0].tolist() == [0, 0] and kept.sum(1).tolist() == [1, 1]


def test_rankings_read_the_anchor_row_or_the_attention_received():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]])
    real = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(attention_ranking(probs, real, "cls", "first"), probs[:, 0])
    torch.testing.assert_close(attention_ranking(probs, real, "cls", "last"), probs[:, 2])
    received = attention_ranking(probs, real, "received", "first")
    torch.testing.assert_close(received, probs.mean(1))
    real[0, 2] = False  # a padding query does not vote
    received = attention_ranking(probs, real, "received", "first")
    torch.testing.assert_close(received, probs[:, :2].mean(1))


@pytest.mark.parametrize("keep", [0.5, 0.25])
@pytest.mark.parametrize("selector", ["cls", "received"])
def test_the_cloud_half_runs_on_the_kept_tokens_as_if_alone(keep, selector):
    """An independent reference on the tiny ViT: the split block's attention weights from its
    own nn.MultiheadAttention, the top tokens taken by hand, the later blocks run on them."""
    model, x = make("vit"), inputs("vit")
    split = ponder.split_model(_split(model, codec="fp32", keep=keep, selector=selector), {"x": x})
    got = split(x=x)
    with torch.no_grad():
        h = model.patch_embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([model.cls_token.expand(len(x), -1, -1), h], 1)
        h = model.blocks[0](h)
        block = model.blocks[1]
        a = block.norm1(h)
        weights = block.attn(a, a, a, need_weights=True, average_attn_weights=True)[1]
        h = block(h)  # [B, T, D] after the split block
        scores = weights[:, 0] if selector == "cls" else weights.mean(1)
        t = h.shape[1]
        count = math.ceil(keep * t)
        scores[:, 0] = float("inf")
        top = scores.topk(count, dim=1).indices.sort(1).values
        kept = h.gather(1, top[..., None].expand(-1, -1, h.shape[-1]))
        want = model.head(model.norm(model.blocks[2:](kept))[:, 0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert split.last_index.tolist() == top.tolist()


def test_every_token_kept_is_the_hook_split_exactly():
    for name in ("bert", "vit"):
        model, x = make(name), inputs(name)
        x = x if isinstance(x, dict) else {"x": x}
        converted = _split(model, codec="int8")
        hooked = converted(**x) if name == "bert" else converted(x["x"])
        hook_bytes = list(ponder.split_link(converted).bytes.last)
        cut = ponder.split_model(converted, x)
        torch.testing.assert_close(cut(**x), hooked, rtol=0, atol=0)
        assert cut.link.bytes.last == hook_bytes


def test_padded_rows_keep_the_tokens_they_would_keep_alone():
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    split = ponder.split_model(_split(model, codec="fp32", keep=0.5), x)
    batch = split(**x)
    sizes = list(split.link.bytes.last)
    for row in range(len(batch)):
        alone = split(**hf_alone(x, row))
        torch.testing.assert_close(alone[0], batch[row], rtol=1e-4, atol=1e-5)
        assert split.link.bytes.last == [sizes[row]]


def test_the_payload_carries_the_kept_positions():
    model, x = make("vit"), inputs("vit", batch=2)
    split = ponder.split_model(_split(model, keep=0.25, zstd_level=None), {"x": x})
    link = split.link
    split(x=x)
    sent = []
    original = link.round_trip

    def spy(values, real, way, index=None):
        sent.append(index)
        return original(values, real, way, index)

    link.round_trip = spy
    split(x=x)
    (index,) = sent
    tokens = split.edge(x)[0].detach()  # [B, T, D]
    encoded = ponder.runtime.encode_payload(
        {"tokens": tokens[0, index[0]][None].numpy()}, "int8",
        extra={"index": index[0].numpy().astype(np.uint8)}, params=link.params, zstd_level=None,
    )  # fmt: skip
    assert link.bytes.last[0] == len(encoded)
    payload = decode_payload(encoded)
    assert payload.tensors["index"].dtype == np.uint8
    assert payload.params["keep"] == 0.25 and payload.params["selector"] == "cls"


def test_split_fine_tuning_reaches_both_halves_and_counts_bytes_both_ways():
    model = hf_classifier("bert")
    x = hf_inputs("bert", padded=True)
    split = ponder.split_model(_split(model, codec="int8", keep=0.5), x)
    split.link.bytes.reset()
    loss = split(**x).logsumexp(-1).sum()
    loss.backward()
    edge = model.bert.encoder.layer[0].attention.self.query.weight
    tail = split.tail.get_parameter(
        next(n for n, _ in split.tail.named_parameters() if "layer.3" in n)
    )
    assert tail.grad is not None and tail.grad.abs().sum() > 0
    first = dict(split.edge.named_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first.values())
    assert edge.grad is None  # the copy trains, not the model it was converted from
    assert split.link.bytes.down > 0 and split.link.bytes.up > 0


def test_the_split_model_trains_the_converted_model_itself():
    converted = _split(make("vit"), codec="fp32", keep=0.5)
    x = inputs("vit")
    split = ponder.split_model(converted, {"x": x})
    before = converted.head.weight.detach().clone()
    opt = torch.optim.SGD(split.parameters(), lr=0.1)
    split(x=x).sum().backward()
    opt.step()
    assert not torch.equal(converted.head.weight, before)


def test_what_selection_cannot_do_is_refused_with_what_to_do():
    converted = _split(make("vit"), keep=0.5)
    with pytest.raises(ConfigError, match=r"ponder\.split_model"):
        converted(inputs("vit"))
    with pytest.raises(ConfigError, match="selector"):
        ponder.SplitConfig(block=1, keep=0.5, selector="norm")
    gpt2 = _split(hf_classifier("gpt2"), keep=0.5)
    with pytest.raises(UnsupportedModelError, match="input_ids"):
        ponder.split_model(gpt2, hf_inputs("gpt2", padded=True))
    split = ponder.split_model(converted, {"x": inputs("vit")})
    with pytest.raises(ConfigError, match="missing inputs"):
        split(pixels=inputs("vit"))


def test_gpt_like_models_keep_their_last_token():
    model = make("gpt")
    ids = inputs("gpt")
    split = ponder.split_model(_split(model, codec="fp32", keep=0.5), {"input_ids": ids})
    out = split(input_ids=ids)
    assert split.anchor == "last"
    assert (split.last_index[:, -1] == ids.shape[1] - 1).all()
    assert out.shape == (len(ids), 5)
