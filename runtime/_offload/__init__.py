"""The edge-cloud link, torch-free: activation codecs and the self-describing payload the device
sends the cloud half."""

from ponder.runtime._offload.codecs import CODECS, Codec, Encoded, get_codec, list_codecs
from ponder.runtime._offload.payload import Payload, check_params, decode_payload, encode_payload
from ponder.runtime._offload.split import SplitBundle, select_tokens, verify_split

__all__ = [
    "CODECS",
    "Codec",
    "Encoded",
    "Payload",
    "SplitBundle",
    "check_params",
    "decode_payload",
    "encode_payload",
    "get_codec",
    "list_codecs",
    "select_tokens",
    "verify_split",
]
