"""Tiny models of each supported family, for the contract and conversion tests."""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 5


def conv1d_sequential(width: int = 8) -> nn.Sequential:
    def block(i, o):
        return nn.Sequential(nn.Conv1d(i, o, 3, padding=1), nn.BatchNorm1d(o), nn.ReLU())

    head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, CLASSES))
    return nn.Sequential(block(1, width), *(block(width, width) for _ in range(4)), head)


def conv2d_sequential(width: int = 8) -> nn.Sequential:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))
    return nn.Sequential(block(1, width), block(width, width), block(width, width), head)


class _Layer(nn.Module):
    """A pre-norm transformer block; `mask` [B, T] (1 = keep) is passed like BERT passes it."""

    def __init__(self, d: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, mask=None, causal=False):
        # B=batch, T=tokens, D=width
        h = self.norm1(x)
        pad = None if mask is None else mask == 0  # [B, T]
        attn_mask = None
        if causal:
            attn_mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        x = x + self.attn(h, h, h, key_padding_mask=pad, attn_mask=attn_mask)[0]
        return (x + self.mlp(self.norm2(x)),)  # a tuple, as HF layers return


class _Encoder(nn.Module):
    def __init__(self, d: int, n: int):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(d) for _ in range(n))


class TinyBert(nn.Module):
    """BERT-like: embeddings, `encoder.layer` taking an attention mask, classifier on token 0."""

    def __init__(self, vocab: int = 50, d: int = 16, n: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.encoder = _Encoder(d, n)
        self.classifier = nn.Linear(d, CLASSES)

    def forward(self, input_ids, attention_mask=None):
        x = self.embed(input_ids)  # [B, T, D]
        for layer in self.encoder.layer:
            x = layer(x, mask=attention_mask)[0]
        return self.classifier(x[:, 0])  # [B, C]


class TinyGPT(nn.Module):
    """GPT-2-like: `transformer.h` causal blocks, classifier on the last token."""

    def __init__(self, vocab: int = 50, d: int = 16, n: int = 4):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, d)
        self.transformer.h = nn.ModuleList(_Layer(d) for _ in range(n))
        self.score = nn.Linear(d, CLASSES)

    def forward(self, input_ids):
        x = self.transformer.wte(input_ids)
        for block in self.transformer.h:
            x = block(x, causal=True)[0]
        return self.score(x[:, -1])


class TinyViT(nn.Module):
    """ViT-like: patch embedding, class token, `blocks`, norm, head on the class token."""

    def __init__(self, d: int = 16, n: int = 4, patch: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, d, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.Sequential(*(_Plain(d) for _ in range(n)))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, CLASSES)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, T, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.norm(self.blocks(x))[:, 0])


class _Plain(_Layer):
    def forward(self, x):
        return super().forward(x)[0]


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.out = nn.Linear(4, CLASSES)

    def forward(self, x):
        return self.out(self.body(x))


def inputs(name: str, batch: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if name in ("bert", "gpt"):
        ids = torch.randint(0, 50, (batch, 7), generator=g)
        if name == "gpt":
            return ids
        mask = torch.ones(batch, 7, dtype=torch.long)
        mask[::2, 5:] = 0  # padded rows, so a wrongly sliced mask changes the answer
        return {"input_ids": ids, "attention_mask": mask}
    shape = (batch, 1, 20) if name == "conv1d" else (batch, 1, 8, 8)
    # per-sample offset and scale, so pooled features differ between samples
    offset, scale = torch.randn(2, batch, *[1] * (len(shape) - 1), generator=g)
    return offset + scale.exp() * torch.randn(shape, generator=g)


FAMILIES = {
    "conv1d": conv1d_sequential,
    "conv2d": conv2d_sequential,
    "bert": TinyBert,
    "gpt": TinyGPT,
    "vit": TinyViT,
}


def make(name: str, seed: int = 0) -> nn.Module:
    """A tiny model in eval mode; BatchNorm statistics are set from random inputs so that the
    features (and so the exits' confidences) vary from sample to sample."""
    torch.manual_seed(seed)
    model = FAMILIES[name]()
    if name.startswith("conv"):
        with torch.no_grad():
            model(inputs(name, batch=64, seed=seed + 1))
    return model.eval()


def _transformers():
    """transformers, imported through ponder (which switches the hub off); skips the test
    when the nlp extra is missing."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers: pip install 'ponder[nlp]'")
    from ponder.models.text import _transformers

    return _transformers()


def hf_bert(vocab_size: int = 100, seed: int = 0) -> nn.Module:
    """A 2-layer HF BertModel (width 32, FFN 64) with random weights, built offline; skips
    the test when the nlp extra is missing."""
    tf = _transformers()
    torch.manual_seed(seed)
    config = tf.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return tf.BertModel(config).eval()


# The HF classification wrappers of each family ponder finds blocks in, and their padding id.
HF_CLASSIFIERS = {"bert": 0, "distilbert": 0, "gpt2": 0, "roberta": 1, "vit": None}
HF_TOKENS, HF_VOCAB, HF_IMAGE = 8, 100, 16


def hf_classifier(family: str, seed: int = 0) -> nn.Module:
    """A 4-layer HF *ForSequenceClassification (ViTForImageClassification for "vit"), width
    32, CLASSES labels, random weights, eval mode; skips the test without transformers.

    GPT-2 gets a pad_token_id, so its head pools each row's last non-padding token, which it
    finds from `input_ids` after the blocks.
    """
    tf = _transformers()
    pad = HF_CLASSIFIERS[family]
    layers = {"num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}
    text = {"vocab_size": HF_VOCAB, "max_position_embeddings": 2 * HF_TOKENS, "pad_token_id": pad}
    configs = {
        "bert": lambda: tf.BertConfig(hidden_size=32, **layers, **text),
        "roberta": lambda: tf.RobertaConfig(hidden_size=32, **layers, **text),
        "distilbert": lambda: tf.DistilBertConfig(
            dim=32, n_layers=4, n_heads=2, hidden_dim=64, **text
        ),
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=HF_VOCAB,
            n_positions=2 * HF_TOKENS,
            n_embd=32,
            n_layer=4,
            n_head=2,
            pad_token_id=pad,
            bos_token_id=2,
            eos_token_id=2,
        ),
        "vit": lambda: tf.ViTConfig(image_size=HF_IMAGE, patch_size=4, hidden_size=32, **layers),
    }
    wrappers = {
        "bert": tf.BertForSequenceClassification,
        "roberta": tf.RobertaForSequenceClassification,
        "distilbert": tf.DistilBertForSequenceClassification,
        "gpt2": tf.GPT2ForSequenceClassification,
        "vit": tf.ViTForImageClassification,
    }
    torch.manual_seed(seed)
    config = configs[family]()
    config.num_labels = CLASSES
    return wrappers[family](config).eval()


def hf_inputs(family: str, padded: bool, batch: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keyword inputs for `hf_classifier(family)`: images, or token ids with an attention mask
    where, when `padded`, every other row ends in padding (right-padded, as tokenizers do).
    Batch and token count differ, so no tensor is ambiguous about which dimension is the batch."""
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, HF_IMAGE, HF_IMAGE, generator=g)}
    ids = torch.randint(3, HF_VOCAB, (batch, HF_TOKENS), generator=g)  # [B, T], no pad id
    mask = torch.ones_like(ids)
    if padded:
        for row in range(0, batch, 2):
            length = 3 + row % (HF_TOKENS - 3)  # 3.. tokens
            mask[row, length:] = 0
            ids[row, length:] = HF_CLASSIFIERS[family]
    return {"input_ids": ids, "attention_mask": mask}


def hf_alone(x: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    """Row `row` of `hf_inputs` as a batch of one, its padding cut off."""
    if "attention_mask" not in x:
        return {k: v[row : row + 1] for k, v in x.items()}
    length = int(x["attention_mask"][row].sum())
    return {k: v[row : row + 1, :length] for k, v in x.items()}


class UserHead(nn.Module):
    """A plain Hugging Face base model (BertModel or ViTModel, 4 layers, width 32) with the
    user's own head: mean pooling over the attention mask for text, the class token for images,
    then a linear layer."""

    def __init__(self, family: str, seed: int = 0):
        super().__init__()
        tf = _transformers()
        layers = {"num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}
        torch.manual_seed(seed)
        if family == "bert":
            text = {"vocab_size": HF_VOCAB, "max_position_embeddings": 2 * HF_TOKENS}
            self.encoder = tf.BertModel(tf.BertConfig(hidden_size=32, **layers, **text))
        else:
            config = tf.ViTConfig(image_size=HF_IMAGE, patch_size=4, hidden_size=32, **layers)
            self.encoder = tf.ViTModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None):
        # B=batch, T=tokens, D=width
        if pixel_values is not None:
            return self.head(self.encoder(pixel_values=pixel_values).last_hidden_state[:, 0])
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)  # [B, T, 1]
        pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, D]
        return self.head(pooled)
