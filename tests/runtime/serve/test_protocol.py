"""The Open Inference Protocol bodies: JSON and binary round trips, the protocol's own example
read byte for byte, and every malformed body refused with a message and a status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ponder.runtime._serve import (
    DATATYPES,
    HEADER_LENGTH,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

RNG = np.random.default_rng(0)
ARRAYS = {
    "tokens": RNG.integers(-127, 128, (1, 7, 33)).astype(np.int8),  # odd width
    "scales": RNG.random((1, 7)).astype(np.float32),
    "index": np.array([0, 3, 9, 200], np.uint8),
    "mask": np.array([[True, False, True]]),
    "ids": RNG.integers(0, 2**40, (2, 3)).astype(np.int64),
    "empty": np.zeros((0, 384), np.float32),  # a batch with no tokens
}


@pytest.mark.parametrize("binary", [True, False])
def test_requests_round_trip_every_datatype_and_shape(binary):
    body, length = encode_request(
        ARRAYS, id="r1", parameters={"split_block": 3, "codec": "int8"}, binary=binary,
        outputs={"logits": True}, binary_outputs=True,
    )  # fmt: skip
    assert (length is not None) == binary
    got = decode_request(body, length)
    assert list(got.inputs) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert got.inputs[name].dtype == array.dtype and got.inputs[name].shape == array.shape
        np.testing.assert_array_equal(got.inputs[name], array)
    assert got.id == "r1" and got.parameters["split_block"] == 3
    assert got.outputs == {"logits": True} and got.binary_outputs
    if binary:  # binary data follow the JSON, each as many bytes as its dtype and shape say
        assert len(body) - length == sum(a.nbytes for a in ARRAYS.values())


def test_responses_round_trip_binary_and_json_outputs_together():
    outputs = {"logits": RNG.random((2, 5)).astype(np.float32), "exit": np.array([1, 3])}
    body, length = encode_response(outputs, "minilm-tail", id="r1", binary={"logits"})
    head = json.loads(body[:length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 40}
    assert head["outputs"][1]["data"] == [1, 3]
    got = decode_response(body, length)
    assert got.model_name == "minilm-tail" and got.id == "r1"
    np.testing.assert_array_equal(got.outputs["logits"], outputs["logits"])
    np.testing.assert_array_equal(got.outputs["exit"], outputs["exit"])
    fp16 = {"h": np.ones(3, np.float16)}
    with pytest.raises(ProtocolError, match="binary only"):
        encode_response(fp16, "m", binary=False)
    assert decode_response(*encode_response(fp16, "m")).outputs["h"].dtype == np.float16


def test_the_protocols_own_binary_example_reads_byte_for_byte():
    """The example of the KServe binary tensor extension: two inputs, UINT32 [2, 2] and BOOL
    [3], their bytes after the JSON in input order."""
    head = (
        b'{"model_name":"mymodel","inputs":[{"name":"input0","shape":[2,2],"datatype":"UINT32",'
        b'"parameters":{"binary_data_size":16}},{"name":"input1","shape":[3],"datatype":"BOOL",'
        b'"parameters":{"binary_data_size":3}}]}'
    )
    data = np.array([[1, 2], [3, 2**32 - 1]], "<u4").tobytes() + bytes([1, 0, 1])
    got = decode_request(head + data, str(len(head)))  # the header's value arrives as text
    assert got.inputs["input0"].tolist() == [[1, 2], [3, 2**32 - 1]]
    assert got.inputs["input1"].tolist() == [True, False, True]
    nested = b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}'
    assert decode_request(nested).inputs["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def _request(**change):
    entry = {"name": "x", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": 24}}  # fmt: skip
    for key, value in change.items():  # None: leave the key out
        entry.pop(key) if value is None else entry.update({key: value})
    return json.dumps({"inputs": [entry]}).encode()


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be an object"),
        (b'{"inputs": []}', None, "non-empty list"),
        (_request() + bytes(24), "10000", "body has"),
        (_request() + bytes(24), "abc", "must be an integer"),
        (_request() + bytes(24), "0", "body has"),
        (_request() + bytes(20), None, "not valid JSON"),  # binary data without the header
        (_request(), "len", "binary bytes run past the body"),
        (_request() + bytes(23), "len", "binary bytes run past the body"),
        (_request() + bytes(30), "len", "6 bytes after the JSON header"),
        (_request(parameters={"binary_data_size": 20}) + bytes(20), "len", "does not match"),
        (_request(parameters={"binary_data_size": -1}), "len", "integer >= 0"),
        (_request(datatype="BYTES"), "len", "BYTES tensors are not supported"),
        (_request(datatype="FLOAT"), "len", "not one of"),
        (_request(shape=[2, -3]), "len", "list of integers >= 0"),
        (_request(shape="2x3"), "len", "list of integers >= 0"),
        (_request(name=7), "len", "needs a name"),
        (_request(parameters=None, data=[1, 2, 3]), None, "holds 3 values"),
        (_request(parameters=None, data=["a"] * 6), None, "not a list of float32"),
        (_request(parameters=None), None, "neither 'data' nor"),
        (_request(parameters=None, datatype="FP16", data=[1] * 6), None, "binary data only"),
        (_request(parameters=[1]), None, "must be an object"),
    ],
)
def test_malformed_requests_are_refused_with_what_is_wrong(body, length, message):
    if length == "len":
        length = len(body.split(b"}]}")[0]) + 3
    with pytest.raises(ProtocolError, match=message) as caught:
        decode_request(body, length)
    assert caught.value.status == 400


def test_twice_named_inputs_oversized_shapes_and_unknown_dtypes_are_refused():
    twice = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}] * 2}
    with pytest.raises(ProtocolError, match="given twice"):
        decode_request(json.dumps(twice).encode())
    huge = {"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "INT8",
                        "parameters": {"binary_data_size": 1}}]}  # fmt: skip
    with pytest.raises(ProtocolError, match="elements") as caught:
        decode_request(json.dumps(huge).encode())
    assert caught.value.status == 413
    with pytest.raises(ProtocolError, match="no Open Inference Protocol datatype"):
        encode_request({"x": np.zeros(2, np.complex64)})
    with pytest.raises(ProtocolError, match="model_name"):
        decode_response(b'{"outputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1]}]}')
    outputs = {"outputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}],
               "model_name": "m", "inputs": 3}  # fmt: skip
    assert decode_response(json.dumps(outputs).encode()).outputs["x"].tolist() == [1]
    bad = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}],
           "outputs": "all"}  # fmt: skip
    with pytest.raises(ProtocolError, match="'outputs' must be a list"):
        decode_request(json.dumps(bad).encode())


def test_every_datatype_has_a_little_endian_dtype():
    assert set(DATATYPES) == {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                              "INT32", "INT64", "FP16", "FP32", "FP64"}  # fmt: skip
    assert all(d.byteorder in ("<", "|") for d in DATATYPES.values())
    assert HEADER_LENGTH == "Inference-Header-Content-Length"
