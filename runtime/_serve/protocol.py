"""The Open Inference Protocol (KServe v2) inference bodies over HTTP, in numpy: requests and
responses as JSON and with the binary tensor extension. No torch and no web framework, so the
server (`ponder serve`) and the torch-free device client share it.

A request body is a JSON object

    {"id": "...", "parameters": {...},
     "inputs": [{"name": "tokens", "shape": [1, 12, 384], "datatype": "INT8",
                 "parameters": {"binary_data_size": 4608}}, ...],
     "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]}

optionally followed by the raw bytes of every input that declares `binary_data_size`, in input
order, little-endian, row-major; the HTTP header `Inference-Header-Content-Length` then gives
the JSON's length (without it the whole body is JSON and every input carries `data`, a flat or
nested list). Responses have the same form with `model_name`, `model_version` and `outputs`.
FP16 travels in binary only, as the protocol says; BYTES tensors are not supported here.

Anything malformed is a `ProtocolError` whose message says what is wrong, with the HTTP status
a server should answer (400: the request is wrong; 413: too large).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ponder._core.errors import PonderError

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "InferResponse",
    "ProtocolError",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype).newbyteorder("<")
    for name, dtype in (
        ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
        ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
        ("INT64", np.int64), ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64),
    )
}  # fmt: skip
_OF_DTYPE = {dtype.name: name for name, dtype in DATATYPES.items()}
MAX_ELEMENTS = 1 << 28  # per tensor: a shape that asks for more is refused before allocating


class ProtocolError(PonderError, ValueError):
    """A malformed Open Inference Protocol body; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    """A decoded request: inputs by name (in request order), the request's parameters, each
    input's own parameters, and the outputs asked for ({name: binary?}; None: all, and
    `binary_outputs` says how)."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    input_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, bool] | None = None
    binary_outputs: bool = False


@dataclass
class InferResponse:
    outputs: dict[str, np.ndarray]
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def datatype_of(array: np.ndarray) -> str:
    """The protocol's name for `array`'s dtype; ProtocolError for one it has no name for."""
    name = _OF_DTYPE.get(np.asarray(array).dtype.newbyteorder("<").name)
    if name is None:
        raise ProtocolError(
            f"dtype {np.asarray(array).dtype} has no Open Inference Protocol datatype here; "
            f"use one of {', '.join(d.name for d in DATATYPES.values())}"
        )
    return name


def encode_request(
    inputs: dict[str, np.ndarray],
    *,
    id: str | None = None,
    parameters: dict[str, Any] | None = None,
    binary: bool = True,
    outputs: dict[str, bool] | None = None,
    binary_outputs: bool | None = None,
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) of a request; binary=False puts the data in JSON."""
    head: dict[str, Any] = {}
    if id is not None:
        head["id"] = id
    params = dict(parameters or {})
    if binary_outputs is not None:
        params["binary_data_output"] = bool(binary_outputs)
    if params:
        head["parameters"] = params
    head["inputs"], chunks = _tensors(inputs, binary)
    if outputs is not None:
        head["outputs"] = [
            {"name": n, "parameters": {"binary_data": bool(b)}} for n, b in outputs.items()
        ]
    return _body(head, chunks)


def encode_response(
    outputs: dict[str, np.ndarray],
    model_name: str,
    *,
    model_version: str | None = None,
    id: str | None = None,
    parameters: dict[str, Any] | None = None,
    binary: bool | set[str] = True,
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) of a response; `binary`: all outputs, none, or the
    names of those sent as binary."""
    head: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        head["model_version"] = model_version
    if id is not None:
        head["id"] = id
    if parameters:
        head["parameters"] = dict(parameters)
    head["outputs"], chunks = _tensors(outputs, binary)
    return _body(head, chunks)


def decode_request(
    body: bytes | memoryview, header_length: int | str | None = None
) -> InferRequest:
    """Parse a request body (and the value of its Inference-Header-Content-Length header)."""
    head, tensors = _decode(body, header_length, "inputs")
    params = _object(head, "parameters")
    outputs = None
    if "outputs" in head:
        entries = head["outputs"]
        if not isinstance(entries, list):
            raise ProtocolError("'outputs' must be a list of {name, parameters}")
        outputs = {}
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise ProtocolError(f"an entry of 'outputs' has no name: {entry!r}")
            outputs[name] = bool(_object(entry, "parameters").get("binary_data", False))
    request_id = head.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string, got {request_id!r}")
    return InferRequest(
        inputs={name: array for name, array, _ in tensors},
        id=request_id,
        parameters=params,
        input_parameters={name: p for name, _, p in tensors},
        outputs=outputs,
        binary_outputs=bool(params.get("binary_data_output", False)),
    )


def decode_response(
    body: bytes | memoryview, header_length: int | str | None = None
) -> InferResponse:
    """Parse a response body (and its Inference-Header-Content-Length header)."""
    head, tensors = _decode(body, header_length, "outputs")
    name = head.get("model_name")
    if not isinstance(name, str):
        raise ProtocolError(f"a response names its model ('model_name'), got {name!r}")
    return InferResponse(
        outputs={n: array for n, array, _ in tensors},
        model_name=name,
        model_version=head.get("model_version"),
        id=head.get("id"),
        parameters=_object(head, "parameters"),
    )


def _tensors(arrays: dict[str, np.ndarray], binary: bool | set[str]) -> tuple[list, list[bytes]]:
    entries, chunks = [], []
    for name, value in arrays.items():
        array = np.asarray(value)
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        as_binary = binary if isinstance(binary, bool) else name in binary
        if as_binary:
            raw = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            if datatype == "FP16":
                raise ProtocolError(f"{name!r} is FP16, which the protocol sends as binary only")
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    return entries, chunks


def _body(head: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, int | None]:
    text = json.dumps(head, separators=(",", ":")).encode()
    if not chunks:
        return text, None
    return text + b"".join(chunks), len(text)


def _decode(
    body: bytes | memoryview, header_length: int | str | None, key: str
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray, dict[str, Any]]]]:
    data = memoryview(body).cast("B")
    size = _header_size(header_length, len(data))
    try:
        head = json.loads(bytes(data[:size]))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"the JSON header is not valid JSON: {e}") from None
    if not isinstance(head, dict):
        raise ProtocolError("the JSON header must be an object")
    entries = head.get(key)
    if not isinstance(entries, list) or not entries:
        raise ProtocolError(f"'{key}' must be a non-empty list of tensors")
    rest, offset, tensors, seen = data[size:], 0, [], set()
    for entry in entries:
        name, shape, dtype, params = _entry(entry)
        if name in seen:
            raise ProtocolError(f"tensor {name!r} is given twice")
        seen.add(name)
        count = math.prod(shape)
        if "binary_data_size" in params:
            nbytes = params["binary_data_size"]
            if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
                raise ProtocolError(f"{name!r}: binary_data_size must be an integer >= 0")
            if nbytes != count * dtype.itemsize:
                raise ProtocolError(
                    f"{name!r}: binary_data_size {nbytes} does not match shape {list(shape)} of "
                    f"{_OF_DTYPE[dtype.name]} ({count * dtype.itemsize} bytes)"
                )
            if offset + nbytes > len(rest):
                raise ProtocolError(
                    f"{name!r}: its {nbytes} binary bytes run past the body (bytes "
                    f"{offset}..{offset + nbytes} of the {len(rest)} after the JSON header)"
                )
            array = np.frombuffer(rest, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += nbytes
            array = array.astype(dtype.newbyteorder("="))
        else:
            array = _json_data(entry, name, shape, dtype)
        tensors.append((name, array, params))
    if offset != len(rest):
        raise ProtocolError(
            f"the body has {len(rest) - offset} bytes after the JSON header that no tensor "
            "declares (binary_data_size)"
        )
    return head, tensors


def _header_size(header_length: int | str | None, body: int) -> int:
    if header_length is None:
        return body
    try:
        size = int(header_length)
    except (TypeError, ValueError):
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < size <= body:
        raise ProtocolError(f"{HEADER_LENGTH} is {size}, but the body has {body} bytes")
    return size


def _entry(entry: Any) -> tuple[str, tuple[int, ...], np.dtype, dict[str, Any]]:
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"a tensor needs a name: {str(entry)[:200]}")
    shape = entry.get("shape")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"{name!r}: 'shape' must be a list of integers >= 0, got {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ProtocolError(f"{name!r}: shape {shape} is over {MAX_ELEMENTS} elements", 413)
    datatype = entry.get("datatype")
    if datatype not in DATATYPES:
        hint = " (BYTES tensors are not supported)" if datatype == "BYTES" else ""
        raise ProtocolError(
            f"{name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}{hint}"
        )
    return name, tuple(shape), DATATYPES[datatype], _object(entry, "parameters")


def _json_data(entry: dict, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if "data" not in entry:
        raise ProtocolError(f"{name!r} has neither 'data' nor parameters.binary_data_size")
    if dtype.name == "float16":
        raise ProtocolError(f"{name!r}: FP16 travels as binary data only")
    try:
        array = np.asarray(entry["data"], dtype=dtype.newbyteorder("="))
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"{name!r}: 'data' is not a list of {dtype.name} values: {e}") from None
    if array.size != math.prod(shape):
        raise ProtocolError(
            f"{name!r}: 'data' holds {array.size} values, shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    return array.reshape(shape)


def _object(obj: dict, key: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise ProtocolError(f"'{key}' must be an object, got {value!r}")
    return value
