"""Tests of router training on padded batches: `token_mask_key` leaves padding tokens out."""

from __future__ import annotations

import copy

import pytest
import tiny_models
import torch

import ponder
import ponder._moe.router as moe_router
from ponder._moe.router import train_routers

B, S = 2, 8  # batch, sequence; the second half of every sequence is padding


def tiny_bert_moe() -> torch.nn.Module:
    model = tiny_models.hf_bert()
    return ponder.convert_(model, ponder.MoEConfig(expert_size=16, router_hidden=16))


def padded_batch(pad_id: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    mask = torch.zeros(B, S, dtype=torch.long)
    mask[:, : S // 2] = 1  # [B, S]
    ids = torch.randint(1, 100, (B, S)).masked_fill(mask == 0, pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def rows_seen(monkeypatch, model, batch, **kwargs) -> list[int]:
    """Rows of every target `train_routers` computes (one call per MoE layer)."""
    seen = []
    real = moe_router.expert_norms

    def spy(layer, tokens):
        seen.append(tokens.shape[0])
        return real(layer, tokens)

    monkeypatch.setattr(moe_router, "expert_norms", spy)
    train_routers(model, [batch], progress=False, **kwargs)
    return seen


def test_mask_keeps_exactly_the_real_tokens(monkeypatch):
    model, batch = tiny_bert_moe(), padded_batch()
    masked = rows_seen(monkeypatch, model, batch, token_mask_key="attention_mask")
    assert masked == [int(batch["attention_mask"].sum())] * 2 == [B * S // 2] * 2
    assert rows_seen(monkeypatch, model, batch) == [B * S] * 2  # default: every token


def test_padded_positions_do_not_change_the_masked_router():
    # Padding tokens' own hidden states change with their ids, but attention hides them from
    # the real tokens; so only training that reads padding can tell two such batches apart.
    base = tiny_bert_moe()

    def trained(pad_id: int, key: str | None) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(base)
        torch.manual_seed(0)
        train_routers(model, [padded_batch(pad_id)], epochs=3, progress=False, token_mask_key=key)
        return {k: v for k, v in model.state_dict().items() if ".router." in k}

    a, b = trained(0, "attention_mask"), trained(7, "attention_mask")
    assert a.keys() == b.keys() and a
    for k in a:
        # same real tokens, same order of operations: equal up to float32 rounding
        torch.testing.assert_close(a[k], b[k])
    plain_a, plain_b = trained(0, None), trained(7, None)
    assert any(not torch.equal(plain_a[k], plain_b[k]) for k in plain_a)


def test_bad_mask_key_or_shape_fails_clearly():
    model, batch = tiny_bert_moe(), padded_batch()
    with pytest.raises(ponder.ConfigError, match="token_mask_key='mask'"):
        train_routers(model, [batch], progress=False, token_mask_key="mask")
    with pytest.raises(ponder.ConfigError, match="needs dict batches"):
        train_routers(model, [batch["input_ids"]], progress=False, token_mask_key="x")
    wrong = {**batch, "keep": torch.ones(B, S - 1)}
    with pytest.raises(ponder.ConfigError, match="does not match the input"):
        train_routers(model, [wrong], progress=False, token_mask_key="keep")
    empty = {**batch, "attention_mask": torch.zeros(B, S, dtype=torch.long)}
    with pytest.raises(ponder.ConfigError, match="marks no real tokens"):
        train_routers(model, [empty], progress=False, token_mask_key="attention_mask")
