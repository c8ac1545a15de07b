"""Serving the cloud half: the Open Inference Protocol (KServe v2) bodies (numpy only), the
device's offload client (standard library), and the server app (`ponder serve`, Starlette)."""

from ponder.runtime._serve.client import LinkEstimate, OffloadClient, OffloadError
from ponder.runtime._serve.offload import Offloader, OffloadResult
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
    "LinkEstimate",
    "OffloadClient",
    "OffloadError",
    "OffloadResult",
    "Offloader",
    "ProtocolError",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
