"""The link's codecs as torch ops, for tracing only: torch.export cannot run the numpy codecs,
so a traced split model quantizes and dequantizes in its graph instead (the same float32
arithmetic as `ponder.runtime`'s codecs, and equal to them value for value: tests/sdk/split).
Bytes are not counted here: nothing is sent while tracing."""

from __future__ import annotations

import torch

from ponder._core.errors import ConfigError

FP16_MAX = float(torch.finfo(torch.float16).max)


def traced_round_trip(x: torch.Tensor, real: torch.Tensor, codec: str) -> torch.Tensor:
    """`x` [B, T, D] as the cloud decodes it after `codec`; tokens where `real` [B, T] is
    False come back as zeros (they are not sent)."""
    x = x.float()
    if codec == "fp32":
        out = x
    elif codec == "fp16":
        out = x.clamp(-FP16_MAX, FP16_MAX).half().float()
    elif codec == "int8":
        out = _symmetric(x, 127)
    elif codec == "int4":
        out = _symmetric(x, 7)
    elif codec == "int4-g32":
        out = _grouped4(x, 32)
    else:
        raise ConfigError(f"codec {codec!r} has no traceable form")
    return out * real[..., None].to(out.dtype)


def _symmetric(x: torch.Tensor, levels: int) -> torch.Tensor:
    scale = x.abs().amax(-1, keepdim=True) / levels  # [..., 1]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x / safe).clamp(-levels, levels) * scale


def _grouped4(x: torch.Tensor, group: int) -> torch.Tensor:
    *lead, width = x.shape
    groups = -(-width // group)
    padded = torch.nn.functional.pad(x, (0, groups * group - width))
    grouped = padded.reshape(*lead, groups, group)
    peak = grouped.abs().amax(-1)  # [..., G]
    scales = (peak / 7).clamp(max=FP16_MAX).half()
    low = scales.float() * 7 < peak  # rounded down: one fp16 step up, so no code overflows
    scales = torch.where(
        low, torch.nextafter(scales, torch.full_like(scales, float("inf"))), scales
    )
    scale = scales.float()[..., None]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(grouped / safe).clamp(-7, 7)
    return (codes * scale).reshape(*lead, groups * group)[..., :width]
