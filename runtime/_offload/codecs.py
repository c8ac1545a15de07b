"""Activation codecs for the edge-cloud link, numpy only (they run on the device, in the server
and in tests without torch).

A codec turns float activations [..., D] (tokens on the last axis but one, features on the
last) into a few named arrays and back. Scales are per token (per row of the last axis) or per
group of features within a token, so one outlier token does not flatten every other token's
resolution. Measured on real all-MiniLM-L6-v2 activations (DESIGN.md, "Offload"): int8 per
token is 3.96x smaller than fp32 at token cosine >= 0.999; int4 per token falls to 0.91-0.95,
which is why int4 also comes with per-group scales.

Entropy coding (zstd) is not a codec but a payload option (see `payload.py`): it runs on the
packed bytes of whatever codec was chosen, and is skipped when it saves too little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ponder._core.errors import ConfigError, PayloadError
from ponder._core.registry import Registry

__all__ = ["CODECS", "Codec", "Encoded", "get_codec", "list_codecs"]

FP16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Encoded:
    """A codec's output: named arrays (`parts`) and the shape of the activations they decode to."""

    codec: str
    shape: tuple[int, ...]
    parts: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())


class Codec(Protocol):
    name: str
    about: str

    def encode(self, x: np.ndarray) -> Encoded: ...

    def decode(self, encoded: Encoded) -> np.ndarray: ...

    def parts_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[str, tuple[int, ...]]]: ...


CODECS: Registry[type] = Registry("codec")


def get_codec(name: str) -> Codec:
    """The codec called `name` (see `list_codecs`); a clear error lists the known ones."""
    return CODECS.get(name)()


def list_codecs() -> dict[str, str]:
    """{codec name: one line about it} (`ponder list codecs`)."""
    return {name: CODECS.get(name).about for name in CODECS.names()}


def _activations(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ConfigError(f"a codec needs activations [..., D] with D >= 1, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"a codec encodes float activations, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ConfigError("activations to encode hold NaN or infinity; nothing can be sent")
    return x.astype(np.float32, copy=False)


def _expect(encoded: Encoded, spec: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Refuse parts whose names, dtypes or shapes are not the ones this codec writes for
    `encoded.shape` (a payload from another codec, or one edited on the way)."""
    if set(encoded.parts) != set(spec):
        raise PayloadError(
            f"codec {encoded.codec!r} expects parts {sorted(spec)}, got {sorted(encoded.parts)}"
        )
    for name, (dtype, shape) in spec.items():
        part = encoded.parts[name]
        if part.dtype != np.dtype(dtype) or part.shape != shape:
            raise PayloadError(
                f"codec {encoded.codec!r} part {name!r} should be {dtype} {list(shape)} for "
                f"activations {list(encoded.shape)}, got {part.dtype} {list(part.shape)}"
            )


class _Float:
    """Values as a float dtype (fp16 clipped to its range)."""

    name, about, dtype = "", "", "float32"

    def parts_spec(self, shape):
        return {"values": (self.dtype, tuple(shape))}

    def encode(self, x):
        x = _activations(x)
        if self.dtype == "float16":
            x = np.clip(x, -FP16_MAX, FP16_MAX)
        return Encoded(self.name, x.shape, {"values": np.ascontiguousarray(x, self.dtype)})

    def decode(self, encoded):
        _expect(encoded, self.parts_spec(encoded.shape))
        return encoded.parts["values"].astype(np.float32)


@CODECS.register("fp32")
class Fp32(_Float):
    name, about = "fp32", "float32 as computed: the uncompressed baseline (4 bytes a value)"


@CODECS.register("fp16")
class Fp16(_Float):
    name, about, dtype = "fp16", "float16, values clipped to its range (2 bytes a value)", "float16"


def _symmetric(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes in [-levels, levels] and float32 scales over the last axis of `x`
    [..., G, n] (one scale per group of n values). An all-zero group gets scale 0 and codes 0."""
    peak = np.abs(x).max(axis=-1, keepdims=True)  # [..., G, 1]
    scale = (peak / levels).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint(x / safe), -levels, levels).astype(np.int8)
    return codes, scale[..., 0]


@CODECS.register("int8")
class Int8:
    name = "int8"
    about = "int8 per token (symmetric, one float32 scale a token): ~4x smaller than fp32"

    def parts_spec(self, shape):
        return {"codes": ("int8", tuple(shape)), "scales": ("float32", tuple(shape[:-1]))}

    def encode(self, x):
        x = _activations(x)
        codes, scales = _symmetric(x[..., None, :], 127)
        return Encoded(self.name, x.shape, {"codes": codes[..., 0, :], "scales": scales[..., 0]})

    def decode(self, encoded):
        _expect(encoded, self.parts_spec(encoded.shape))
        p = encoded.parts
        return p["codes"].astype(np.float32) * p["scales"][..., None]


def _pack4(codes: np.ndarray) -> np.ndarray:
    """int4 codes in [-7, 7] [..., D] -> uint8 [..., ceil(D / 2)], two codes a byte (the low
    nibble first), an odd width padded with one zero code."""
    nibbles = (codes.astype(np.int16) + 8).astype(np.uint8)  # 1..15
    if nibbles.shape[-1] % 2:
        pad = np.full((*nibbles.shape[:-1], 1), 8, np.uint8)
        nibbles = np.concatenate([nibbles, pad], axis=-1)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def _unpack4(packed: np.ndarray, width: int) -> np.ndarray:
    nibbles = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), np.uint8)
    nibbles[..., 0::2], nibbles[..., 1::2] = packed & 0x0F, packed >> 4
    return nibbles[..., :width].astype(np.int8) - 8


class _Int4:
    """int4 codes in [-7, 7], packed two a byte; `group` values share a scale (0: the whole
    token). Scales are float16 for groups (they would otherwise cost a quarter of the codes)."""

    name, about, group = "", "", 0

    def _groups(self, width: int) -> int:
        return 1 if not self.group else -(-width // self.group)

    def parts_spec(self, shape):
        *lead, width = shape
        scale_dtype = "float16" if self.group else "float32"
        scales = (*lead, self._groups(width)) if self.group else tuple(lead)
        return {"codes": ("uint8", (*lead, -(-width // 2))), "scales": (scale_dtype, scales)}

    def encode(self, x):
        x = _activations(x)
        *lead, width = x.shape
        size = self.group or width
        groups = self._groups(width)
        padded = np.zeros((*lead, groups * size), np.float32)
        padded[..., :width] = x
        grouped = padded.reshape(*lead, groups, size)
        if self.group:
            # fp16 scales: round the scale up so no code overflows after the rounding
            peak = np.abs(grouped).max(axis=-1)
            scales = np.minimum(peak / 7, FP16_MAX).astype(np.float16)
            low = scales.astype(np.float32) * 7 < peak
            scales[low] = np.nextafter(scales[low], np.float16(np.inf))
            safe = np.where(scales > 0, scales.astype(np.float32), 1.0)[..., None]
            codes = np.clip(np.rint(grouped / safe), -7, 7).astype(np.int8)
        else:
            codes, scales = _symmetric(grouped, 7)
            scales = scales[..., 0]
        codes = codes.reshape(*lead, groups * size)[..., :width]
        return Encoded(self.name, x.shape, {"codes": _pack4(codes), "scales": scales})

    def decode(self, encoded):
        _expect(encoded, self.parts_spec(encoded.shape))
        *lead, width = encoded.shape
        codes = _unpack4(encoded.parts["codes"], width).astype(np.float32)
        scales = encoded.parts["scales"].astype(np.float32)
        if not self.group:
            return codes * scales[..., None]
        groups = self._groups(width)
        padded = np.zeros((*lead, groups * self.group), np.float32)
        padded[..., :width] = codes
        out = padded.reshape(*lead, groups, self.group) * scales[..., None]
        return out.reshape(*lead, groups * self.group)[..., :width]


@CODECS.register("int4")
class Int4(_Int4):
    name = "int4"
    about = (
        "int4 per token, two codes a byte: ~7.8x smaller, coarse (one loud channel sets the scale)"
    )


@CODECS.register("int4-g32")
class Int4Group32(_Int4):
    name, group = "int4-g32", 32
    about = "int4 with a float16 scale per 32 values: ~7.1x smaller, finer than int4 per token"
