"""Activation codecs: exact sizes, error bounds per codec, awkward shapes, and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import ConfigError, PayloadError
from ponder.runtime import Encoded, get_codec, list_codecs

CODECS = ["fp32", "fp16", "int8", "int4", "int4-g32"]


def _tokens(shape, seed=0, outliers=True):
    """Activation-like values: unit Gaussian tokens, a few large channels (as in BERT)."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if outliers and shape[-1] > 3:
        x[..., 3] *= 20  # one outlier channel, as transformer activations have
    return x


def _cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def test_every_codec_is_listed_with_a_line_about_it():
    listed = list_codecs()
    assert sorted(listed) == sorted(CODECS)
    assert all(about for about in listed.values())
    with pytest.raises(ConfigError, match=r"unknown codec 'int3'.*int8"):
        get_codec("int3")


@pytest.mark.parametrize(
    ("codec", "bytes_per_token", "min_cosine"),
    [
        ("fp32", 4 * 384, 0.99999),
        ("fp16", 2 * 384, 0.99999),
        ("int8", 384 + 4, 0.999),
        ("int4", 192 + 4, 0.8),  # one loud channel costs the whole token: 0.83 worst, 0.92 mean
        ("int4-g32", 192 + 2 * 12, 0.98),
    ],
)
def test_sizes_and_fidelity_on_activation_like_tokens(codec, bytes_per_token, min_cosine):
    x = _tokens((2, 50, 384))
    enc = get_codec(codec).encode(x)
    assert enc.nbytes == 2 * 50 * bytes_per_token
    back = get_codec(codec).decode(enc)
    assert back.shape == x.shape and back.dtype == np.float32
    assert _cosine(x, back).min() >= min_cosine


def test_int8_error_is_at_most_half_a_step_of_each_tokens_scale():
    x = _tokens((3, 7, 33))
    enc = get_codec("int8").encode(x)
    step = np.abs(x).max(-1) / 127  # [3, 7]
    err = np.abs(get_codec("int8").decode(enc) - x).max(-1)
    assert (err <= step / 2 + 1e-6).all()
    np.testing.assert_allclose(enc.parts["scales"], step, rtol=1e-6)


def test_int4_groups_keep_a_quiet_token_part_where_one_scale_per_token_cannot():
    """One loud channel flattens the rest of the token at 4 bits with one scale; with a scale
    per 32 values only the loud channel's group pays."""
    x = _tokens((4, 64, 256))
    per_token = get_codec("int4").decode(get_codec("int4").encode(x))
    grouped = get_codec("int4-g32").decode(get_codec("int4-g32").encode(x))
    quiet = slice(32, None)  # groups without the outlier channel
    err_token = np.abs(per_token[..., quiet] - x[..., quiet]).mean()
    err_group = np.abs(grouped[..., quiet] - x[..., quiet]).mean()
    assert err_group < err_token / 5


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (1, 1, 7), (1, 197, 384), (3, 1, 33), (2, 5, 31), (4, 9), (17,), (0, 3, 8)],
)
def test_awkward_shapes_round_trip(codec, shape):
    """One token, a batch of one, odd widths (int4 pads a nibble), no leading axes, no rows."""
    x = _tokens(shape, outliers=False)
    c = get_codec(codec)
    enc = c.encode(x)
    assert enc.shape == x.shape
    assert {k: (str(v.dtype), v.shape) for k, v in enc.parts.items()} == c.parts_spec(x.shape)
    back = c.decode(enc)
    assert back.shape == x.shape
    peak = np.abs(x).max() if x.size else 0.0
    tolerance = {"fp32": 0, "fp16": 1e-3, "int8": 1 / 254, "int4": 1 / 14, "int4-g32": 1 / 13}
    assert np.abs(back - x).max(initial=0) <= tolerance[codec] * peak + 1e-6


@pytest.mark.parametrize("codec", CODECS)
def test_zero_tokens_decode_to_zeros_without_nans(codec):
    x = np.zeros((2, 3, 10), np.float32)
    x[1, 2] = 1.5
    back = get_codec(codec).decode(get_codec(codec).encode(x))
    assert np.isfinite(back).all()
    np.testing.assert_array_equal(back[0], 0)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(CODECS),
    st.lists(st.integers(1, 5), min_size=0, max_size=2),
    st.integers(1, 70),
    st.floats(1e-3, 1e4),
    st.integers(0, 2**31 - 1),
)
def test_any_shape_and_scale_round_trips_within_the_codecs_step(codec, lead, width, scale, seed):
    x = scale * _tokens((*lead, width), seed, outliers=False)
    back = get_codec(codec).decode(get_codec(codec).encode(x))
    levels = {"fp32": None, "fp16": None, "int8": 127, "int4": 7, "int4-g32": 7}[codec]
    if levels is None:
        np.testing.assert_allclose(back, x, rtol=1e-3, atol=6e-8)  # fp16 subnormals
    else:  # at most half a step of the largest scale, plus fp16 scale rounding for groups
        assert np.abs(back - x).max() <= np.abs(x).max() / levels * 0.51 + 1e-6 * scale


def test_bad_activations_and_foreign_parts_are_refused():
    int8 = get_codec("int8")
    with pytest.raises(ConfigError, match="float activations"):
        int8.encode(np.ones((2, 3), np.int32))
    with pytest.raises(ConfigError, match="NaN or infinity"):
        int8.encode(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ConfigError, match=r"\[\.\.\., D\] with D >= 1"):
        int8.encode(np.ones((2, 0), np.float32))
    enc = get_codec("fp16").encode(_tokens((2, 4, 8)))
    with pytest.raises(PayloadError, match="codec 'int8' expects parts"):
        int8.decode(Encoded("int8", enc.shape, enc.parts))
    good = int8.encode(_tokens((2, 4, 8)))
    short = dict(good.parts, scales=good.parts["scales"][:1])
    with pytest.raises(PayloadError, match="part 'scales' should be float32 \\[2, 4\\]"):
        int8.decode(Encoded("int8", good.shape, short))
