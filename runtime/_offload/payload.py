"""The offload payload: what the device sends the cloud half (and what comes back in split
fine-tuning), as one self-describing byte string. numpy and zstandard only.

Layout (little-endian), version 1:

    bytes 0-3    magic b"PNDP"
    bytes 4-5    uint16 format version (1)
    bytes 6-7    uint16 flags: bit 0 set = the body is zstd-compressed
    bytes 8-11   uint32 header length H
    bytes 12-15  uint32 body length B (as sent)
    bytes 16-19  uint32 CRC-32 of the H + B bytes that follow
    H bytes      header, UTF-8 JSON (below)
    B bytes      body: every part's raw bytes, C order, one after another

The header:

    {"params": {...},          # what the receiver must check: split block, keep ratio, codec,
                               #   sha256 of the device-side weights (see `check_params`)
     "body_nbytes": N,         # the body's length before compression
     "zstd_level": 1 | null,   # the level used, null when the body is sent as is
     "tensors": [              # in the order they were given
        {"name": "tokens", "codec": "int8", "shape": [B, T, D],
         "parts": [{"name": "codes", "dtype": "int8", "shape": [B, T, D], "offset": 0},
                   {"name": "scales", "dtype": "float32", "shape": [B, T], "offset": ...}]},
        {"name": "indices", "codec": "raw", "shape": [B, T],
         "parts": [{"name": "values", "dtype": "int32", "shape": [B, T], "offset": ...}]}]}

Activations go through a codec (`codecs.py`); other arrays (kept token indices, masks) go
"raw" in their own dtype. zstd runs on the whole body and is kept only when it saves at least
`min_saving` of it (int8 codes gain ~15%, fp32 almost nothing). A payload is refused with a
`PayloadError` that says what is wrong when it is truncated, corrupt (CRC, JSON, zstd), of an
unknown version, or when its parts do not fit the shapes and dtypes it declares.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ponder._core.errors import ConfigError, PayloadError
from ponder.runtime._offload.codecs import CODECS, Encoded, get_codec

__all__ = ["MAGIC", "VERSION", "Payload", "check_params", "decode_payload", "encode_payload"]

MAGIC = b"PNDP"
VERSION = 1
_PREFIX = struct.Struct("<4sHHIII")
_ZSTD = 1
RAW = "raw"
# dtypes a payload may carry (no object arrays, nothing that needs pickle)
DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32")
MAX_BYTES = 1 << 30  # default cap on a decoded body: 1 GiB


@dataclass
class Payload:
    """A decoded payload: the tensors (activations decoded to float32, raw arrays as sent), the
    sender's params, each tensor's codec, and the sizes on the wire."""

    tensors: dict[str, np.ndarray]
    params: dict[str, Any]
    codecs: dict[str, str]
    nbytes: int  # the whole byte string
    body_nbytes: int  # the body before compression
    zstd_level: int | None = None


def _zstd():
    try:
        import zstandard
    except ImportError as e:  # a base dependency; only a broken install lacks it
        raise PayloadError(
            "zstd payloads need the 'zstandard' package: pip install zstandard"
        ) from e
    return zstandard


def encode_payload(
    activations: dict[str, np.ndarray],
    codec: str = "int8",
    *,
    extra: dict[str, np.ndarray] | None = None,
    params: dict[str, Any] | None = None,
    zstd_level: int | None = 1,
    min_saving: float = 0.10,
) -> bytes:
    """Encode float `activations` with `codec` and `extra` arrays as they are, with `params`
    (JSON-plain) for the receiver; zstd at `zstd_level` (1-22; None: never) when it saves at
    least `min_saving` of the body."""
    extra = extra or {}
    clash = set(activations) & set(extra)
    if clash:
        raise ConfigError(f"tensor names {sorted(clash)} are given twice (activations and extra)")
    if zstd_level is not None and not 1 <= zstd_level <= 22:
        raise ConfigError(f"zstd_level must be 1..22 or None, got {zstd_level}")
    try:
        params_json = json.loads(json.dumps(params or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"payload params must be JSON-plain: {e}") from None
    coder = get_codec(codec)
    tensors, chunks, offset = [], [], 0
    items = [(n, coder.encode(a)) for n, a in activations.items()]
    items += [(n, _raw(n, a)) for n, a in extra.items()]
    for name, enc in items:
        parts = []
        for part_name, array in enc.parts.items():
            array = np.ascontiguousarray(array)
            parts.append(
                {"name": part_name, "dtype": array.dtype.name, "shape": list(array.shape),
                 "offset": offset}
            )  # fmt: skip
            chunks.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
            offset += array.nbytes
        tensors.append({"name": name, "codec": enc.codec, "shape": list(enc.shape), "parts": parts})
    body = b"".join(chunks)
    level, flags = None, 0
    if zstd_level is not None and body:
        packed = _zstd().ZstdCompressor(level=zstd_level).compress(body)
        if len(packed) <= (1 - min_saving) * len(body):
            body, level, flags = packed, zstd_level, _ZSTD
    header = {"params": params_json, "body_nbytes": offset, "zstd_level": level, "tensors": tensors}
    head = json.dumps(header, separators=(",", ":")).encode()
    crc = zlib.crc32(body, zlib.crc32(head))
    return _PREFIX.pack(MAGIC, VERSION, flags, len(head), len(body), crc) + head + body


def _raw(name: str, array: np.ndarray) -> Encoded:
    array = np.asarray(array)
    if array.dtype.name not in DTYPES:
        raise ConfigError(
            f"extra tensor {name!r} has dtype {array.dtype}; a payload carries {', '.join(DTYPES)}"
        )
    return Encoded(RAW, array.shape, {"values": array})


def decode_payload(
    data: bytes | bytearray | memoryview,
    *,
    expect: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
) -> Payload:
    """Check and decode a payload; `expect` params must match (see `check_params`)."""
    data = memoryview(data).cast("B")
    if len(data) < _PREFIX.size:
        raise PayloadError(
            f"payload truncated: {len(data)} bytes, fewer than its {_PREFIX.size}-byte prefix"
        )
    magic, version, flags, head_len, body_len, crc = _PREFIX.unpack(data[: _PREFIX.size])
    if magic != MAGIC:
        raise PayloadError(f"not a ponder payload: it starts with {bytes(magic)!r}, not {MAGIC!r}")
    if version != VERSION:
        raise PayloadError(
            f"payload format version {version}; this ponder reads version {VERSION} "
            "(upgrade the older side)"
        )
    if flags & ~_ZSTD:
        raise PayloadError(
            f"payload has unknown flags {flags:#06x}; it was written by a newer ponder"
        )
    size = _PREFIX.size + head_len + body_len
    if len(data) < size:
        raise PayloadError(f"payload truncated: {len(data)} bytes of the {size} it declares")
    if len(data) > size:
        raise PayloadError(f"payload has {len(data) - size} bytes past the {size} it declares")
    head = data[_PREFIX.size : _PREFIX.size + head_len]
    body = data[_PREFIX.size + head_len :]
    if zlib.crc32(body, zlib.crc32(head)) != crc:
        raise PayloadError("payload corrupt: its CRC-32 does not match (damaged on the way?)")
    try:
        header = json.loads(bytes(head))
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(f"payload header is not valid JSON: {e}") from None
    raw_len = _int(header, "body_nbytes")
    if raw_len > max_bytes:
        raise PayloadError(f"payload body of {raw_len} bytes is over the {max_bytes}-byte limit")
    if flags & _ZSTD:
        zstd = _zstd()
        try:
            body = zstd.ZstdDecompressor().decompress(bytes(body), max_output_size=raw_len)
        except zstd.ZstdError as e:
            raise PayloadError(f"payload body does not decompress (zstd): {e}") from None
    if len(body) != raw_len:
        raise PayloadError(f"payload body holds {len(body)} bytes, its header says {raw_len}")
    tensors, codecs = {}, {}
    for entry in _list(header, "tensors"):
        name, enc = _tensor(entry, body)
        if name in tensors:
            raise PayloadError(f"payload names tensor {name!r} twice")
        tensors[name] = (
            enc.parts["values"] if enc.codec == RAW else get_codec(enc.codec).decode(enc)
        )
        codecs[name] = enc.codec
    params = header.get("params", {})
    if not isinstance(params, dict):
        raise PayloadError("payload header field 'params' must be an object")
    if expect:
        check_params(params, expect)
    return Payload(tensors, params, codecs, len(data), raw_len, header.get("zstd_level"))


def _int(obj: dict, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PayloadError(f"payload header field {key!r} must be an integer >= 0, got {value!r}")
    return value


def _list(obj: dict, key: str) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, list):
        raise PayloadError(f"payload header field {key!r} must be a list, got {value!r}")
    return value


def _shape(obj: dict, where: str) -> tuple[int, ...]:
    shape = obj.get("shape") if isinstance(obj, dict) else None
    ok = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not ok:
        raise PayloadError(
            f"payload {where}: 'shape' must be a list of integers >= 0, got {shape!r}"
        )
    return tuple(shape)


def _tensor(entry: Any, body: bytes | memoryview) -> tuple[str, Encoded]:
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str):
        raise PayloadError(f"payload tensor entry without a name: {entry!r}")
    codec = entry.get("codec")
    if codec != RAW and codec not in CODECS:
        raise PayloadError(
            f"payload tensor {name!r} uses codec {codec!r}, unknown here; known: "
            f"{', '.join(CODECS.names())}"
        )
    shape = _shape(entry, f"tensor {name!r}")
    found = {}
    for part in _list(entry, "parts"):
        part_name = part.get("name") if isinstance(part, dict) else None
        where = f"tensor {name!r} part {part_name!r}"
        dtype = part.get("dtype") if isinstance(part, dict) else None
        if dtype not in DTYPES:
            raise PayloadError(f"payload {where}: dtype {dtype!r} is not one of {DTYPES}")
        part_shape = _shape(part, where)
        start = _int(part, "offset")
        nbytes = math.prod(part_shape) * np.dtype(dtype).itemsize
        if start + nbytes > len(body):
            raise PayloadError(
                f"payload {where}: {dtype} {list(part_shape)} needs bytes {start}..{start + nbytes}"
                f" of a {len(body)}-byte body"
            )
        array = np.frombuffer(
            body, dtype=np.dtype(dtype).newbyteorder("<"), count=math.prod(part_shape), offset=start
        )
        found[part_name] = array.reshape(part_shape).astype(dtype, copy=True)
    if codec == RAW and (set(found) != {"values"} or found["values"].shape != shape):
        raise PayloadError(
            f"payload tensor {name!r}: a raw tensor is one part 'values' of its shape"
        )
    return name, Encoded(codec, shape, found)


def check_params(got: dict[str, Any], expect: dict[str, Any]) -> None:
    """Refuse a payload whose params differ from what this receiver serves (a tail for another
    split block, codec, keep ratio, or device-side weights): it would be answered wrongly."""
    wrong = [k for k, v in expect.items() if got.get(k) != v]
    if wrong:
        said = "; ".join(f"{k}: payload {got.get(k)!r}, expected {expect[k]!r}" for k in wrong)
        raise PayloadError(
            f"payload was made for another model half ({said}); export the device bundle and "
            "the tail together and deploy both"
        )
