"""Stages of BERT-like text encoders (all-MiniLM-L6-v2 and other BertModels, dense or with MoE
FFNs): one stage from token ids to the sentence embedding, batch and sequence length dynamic."""

from __future__ import annotations

import torch
from torch import nn

from ponder.models.text import mean_pool

__all__ = ["TEXT_DIMS", "EncoderStage", "is_text_encoder"]

TEXT_DIMS = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}


def is_text_encoder(model: nn.Module) -> bool:
    """A transformers BERT-like encoder without a task head (BertModel and kin)."""
    has_layers = getattr(getattr(model, "encoder", None), "layer", None) is not None
    return has_layers and hasattr(model, "embeddings") and hasattr(model, "config")


class EncoderStage(nn.Module):
    """token ids, attention mask -> mean-pooled, L2-normalised sentence embedding [B, D] (the
    Pooling(mean) -> Normalize pipeline of sentence-transformers encoders)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (mean_pool(hidden, attention_mask),)  # [B, D]
