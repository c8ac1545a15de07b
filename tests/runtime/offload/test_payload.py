"""The offload payload: round trips, zstd only where it pays, params checks, and every kind of
damage refused with a message that says what is wrong."""

import json
import struct
import zlib

import numpy as np
import pytest

from ponder import ConfigError, PayloadError
from ponder.runtime import check_params, decode_payload, encode_payload

PARAMS = {"split_block": 3, "codec": "int8", "keep": 0.5, "device_sha256": "ab" * 32}


def _tokens(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _payload(codec="int8", batch=2, tokens=9, width=40, zstd_level=1):
    x = _tokens((batch, tokens, width))
    idx = np.tile(np.arange(tokens, dtype=np.int32), (batch, 1))
    data = encode_payload(
        {"tokens": x}, codec, extra={"indices": idx}, params=PARAMS, zstd_level=zstd_level
    )
    return x, idx, data


@pytest.mark.parametrize("codec", ["fp32", "fp16", "int8", "int4", "int4-g32"])
@pytest.mark.parametrize(("batch", "tokens", "width"), [(1, 1, 1), (1, 197, 384), (3, 2, 33)])
def test_round_trip_gives_the_codecs_values_and_the_raw_arrays_exactly(codec, batch, tokens, width):
    from ponder.runtime import get_codec

    x, idx, data = _payload(codec, batch, tokens, width)
    got = decode_payload(data, expect=PARAMS)
    c = get_codec(codec)
    np.testing.assert_array_equal(got.tensors["tokens"], c.decode(c.encode(x)))
    np.testing.assert_array_equal(got.tensors["indices"], idx)
    assert got.tensors["indices"].dtype == np.int32
    assert got.params == PARAMS and got.codecs == {"tokens": codec, "indices": "raw"}
    assert got.nbytes == len(data)


def test_the_header_documents_names_dtypes_and_shapes():
    _, _, data = _payload("int8", zstd_level=None)
    magic, version, flags, head_len, body_len, crc = struct.unpack("<4sHHIII", data[:20])
    assert (magic, version, flags) == (b"PNDP", 1, 0)
    header = json.loads(data[20 : 20 + head_len])
    parts = {
        (t["name"], p["name"]): (p["dtype"], p["shape"])
        for t in header["tensors"]
        for p in t["parts"]
    }
    assert parts == {
        ("tokens", "codes"): ("int8", [2, 9, 40]),
        ("tokens", "scales"): ("float32", [2, 9]),
        ("indices", "values"): ("int32", [2, 9]),
    }
    assert body_len == header["body_nbytes"] == 2 * 9 * 40 + 2 * 9 * 4 + 2 * 9 * 4
    assert zlib.crc32(data[20:]) == crc


def test_zstd_is_kept_where_it_saves_and_skipped_where_it_does_not():
    # int8 codes of smooth activations compress; random fp32 mantissas do not
    smooth = np.repeat(_tokens((1, 64, 1)), 256, axis=-1) * np.linspace(0, 1, 256, dtype=np.float32)
    small = encode_payload({"tokens": smooth}, "int8", zstd_level=1)
    plain = encode_payload({"tokens": smooth}, "int8", zstd_level=None)
    assert len(small) < 0.9 * len(plain)
    assert decode_payload(small).zstd_level == 1
    noise = encode_payload({"tokens": _tokens((1, 64, 256))}, "fp32", zstd_level=3)
    assert decode_payload(noise).zstd_level is None  # saved < 10%: sent as is
    np.testing.assert_array_equal(
        decode_payload(small).tensors["tokens"], decode_payload(plain).tensors["tokens"]
    )


def test_a_payload_for_another_model_half_is_refused():
    _, _, data = _payload()
    with pytest.raises(PayloadError, match="split_block: payload 3, expected 4"):
        decode_payload(data, expect={**PARAMS, "split_block": 4})
    with pytest.raises(PayloadError, match="device_sha256"):
        check_params(PARAMS, {"device_sha256": "cd" * 32})


def _reheader(data: bytes, edit) -> bytes:
    """The payload with its header JSON edited by `edit` and the CRC made right again, so the
    checks after the CRC are what refuse it."""
    _, version, flags, head_len, _, _ = struct.unpack("<4sHHIII", data[:20])
    header = json.loads(data[20 : 20 + head_len])
    edit(header)
    head = json.dumps(header).encode()
    body = data[20 + head_len :]
    crc = zlib.crc32(body, zlib.crc32(head))
    return struct.pack("<4sHHIII", b"PNDP", version, flags, len(head), len(body), crc) + head + body


def _set(path, value):
    def edit(header):
        obj = header
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:10], "truncated: 10 bytes, fewer than its 20-byte prefix"),
        (lambda d: d[:-5], "truncated: .* bytes of the .* it declares"),
        (lambda d: d + b"xx", "2 bytes past"),
        (lambda d: b"GIF8" + d[4:], "not a ponder payload"),
        (lambda d: d[:4] + struct.pack("<H", 2) + d[6:], "version 2; this ponder reads version 1"),
        (lambda d: d[:6] + struct.pack("<H", 4) + d[8:], "unknown flags"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "corrupt: its CRC-32 does not match"),
        (lambda d: d[:30] + bytes([d[30] ^ 0x40]) + d[31:], "CRC-32"),
    ],
)
def test_damaged_bytes_are_refused_with_what_is_wrong(damage, message):
    _, _, data = _payload()
    with pytest.raises(PayloadError, match=message):
        decode_payload(damage(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(["tensors", 0, "codec"], "int3"), "codec 'int3', unknown here"),
        (_set(["tensors", 0, "parts", 0, "dtype"], "object"), "dtype 'object' is not one of"),
        (_set(["tensors", 0, "parts", 0, "shape"], [2, 9, 4000]), "needs bytes"),
        (_set(["tensors", 0, "parts", 0, "shape"], [2, -9, 40]), "list of integers >= 0"),
        (_set(["tensors", 0, "shape"], [2, 9, 41]), "part 'codes' should be int8 \\[2, 9, 41\\]"),
        (_set(["tensors", 1, "name"], "tokens"), "names tensor 'tokens' twice"),
        (_set(["body_nbytes"], 5), "holds .* bytes, its header says 5"),
        (_set(["body_nbytes"], "many"), "'body_nbytes' must be an integer"),
        (_set(["tensors"], {}), "'tensors' must be a list"),
        (_set(["params"], [1]), "'params' must be an object"),
    ],
)
def test_headers_that_do_not_fit_their_body_are_refused(edit, message):
    _, _, data = _payload(zstd_level=None)
    with pytest.raises(PayloadError, match=message):
        decode_payload(_reheader(data, edit))


def test_a_body_that_is_not_zstd_or_too_large_is_refused():
    _, _, data = _payload(zstd_level=None)
    flagged = data[:6] + struct.pack("<H", 1) + data[8:]  # says zstd, holds raw bytes
    _, _, _, head_len, _, _ = struct.unpack("<4sHHIII", flagged[:20])
    crc = zlib.crc32(flagged[20:])
    flagged = flagged[:16] + struct.pack("<I", crc) + flagged[20:]
    with pytest.raises(PayloadError, match="does not decompress"):
        decode_payload(flagged)
    with pytest.raises(PayloadError, match="over the 100-byte limit"):
        decode_payload(data, max_bytes=100)
    bad_json = _reheader(data, lambda h: None)
    head_len = struct.unpack("<I", bad_json[8:12])[0]
    body = bad_json[20 + head_len :]
    head = b"{not json" + b" " * (head_len - 9)
    crc = zlib.crc32(body, zlib.crc32(head))
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_payload(bad_json[:16] + struct.pack("<I", crc) + head + body)


def test_bad_arguments_to_encode_are_config_errors():
    x = _tokens((1, 2, 3))
    with pytest.raises(ConfigError, match="given twice"):
        encode_payload({"t": x}, extra={"t": x})
    with pytest.raises(ConfigError, match=r"zstd_level must be 1\.\.22"):
        encode_payload({"t": x}, zstd_level=0)
    with pytest.raises(ConfigError, match="JSON-plain"):
        encode_payload({"t": x}, params={"w": object()})
    with pytest.raises(ConfigError, match="carries bool, int8"):
        encode_payload({"t": x}, extra={"s": np.array(["a"])})
    with pytest.raises(ConfigError, match="unknown codec"):
        encode_payload({"t": x}, "bf16")
