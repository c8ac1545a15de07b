"""Serving the cloud half: the Open Inference Protocol (KServe v2) bodies, numpy only."""

from ponder.runtime._serve.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    InferResponse,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

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
