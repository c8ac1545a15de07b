"""The device side of offloading: an Open Inference Protocol client on the standard library and
numpy (no torch, no HTTP library), with timeouts, one reconnect, and estimates of the link's
round-trip time and bandwidth from its own transfers.

`http.client` writes a request's headers and body in separate writes; with Nagle's algorithm on,
that cost 20-40 ms stalls under load when it was measured (DESIGN.md), so the socket gets
TCP_NODELAY. Any failure — refused connection, timeout, an HTTP error status, a malformed
answer — is an `OffloadError` whose `kind` says which, so that the caller can fall back to a
local answer.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ponder._core.errors import PonderError
from ponder.runtime._policy.link import LinkEstimate
from ponder.runtime._serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    decode_response,
    encode_request,
)

__all__ = ["LinkEstimate", "OffloadClient", "OffloadError"]


class OffloadError(PonderError):
    """Offloading failed; `kind` is "refused", "timeout", "unauthorized", "rejected" (another
    4xx), "server" (5xx) or "protocol" (an answer that is not the protocol), `status` the HTTP
    status where there was one."""

    def __init__(self, message: str, kind: str, status: int | None = None):
        super().__init__(message)
        self.kind, self.status = kind, status


class OffloadClient:
    """Calls `ponder serve` (or any Open Inference Protocol server) for model `model`."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        binary: bool = True,
    ):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise OffloadError(
                f"{url!r}: give http://host:port (https is not supported)", "refused"
            )
        self.host, self.port = parts.hostname, parts.port or 80
        self.model, self.token, self.timeout_s, self.binary = model, token, timeout_s, binary
        self.link = LinkEstimate()
        self.server_ms: float | None = None  # the last answer's server compute time
        self.last_answer_bytes = 0
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def live(self) -> bool:
        try:
            return self._request("GET", "/v2/health/live", None, {})[0] == 200
        except OffloadError:
            return False

    def infer_payloads(self, payloads: list[bytes], parameters: dict[str, Any]) -> np.ndarray:
        """Logits [B, C] for offload payloads (one per sample), sent back to back."""
        data = np.frombuffer(b"".join(payloads), np.uint8)
        sizes = np.array([len(p) for p in payloads], np.int64)
        return self._infer({"payload": data, "payload_sizes": sizes}, parameters)

    def infer_tokens(
        self, tokens: np.ndarray, parameters: dict[str, Any], mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Logits [B, C] for decoded tokens [B, K, D] (and their mask)."""
        inputs = {"tokens": np.asarray(tokens, np.float32)}
        if mask is not None:
            inputs["attention_mask"] = np.asarray(mask, np.int64)
        return self._infer(inputs, parameters)

    def _infer(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> np.ndarray:
        body, length = encode_request(
            inputs, parameters=parameters, binary=self.binary, binary_outputs=self.binary
        )
        headers = {"Content-Type": "application/octet-stream" if length else "application/json"}
        if length is not None:
            headers[HEADER_LENGTH] = str(length)
        start = time.perf_counter()
        status, answer, got = self._request("POST", f"/v2/models/{self.model}/infer", body, headers)
        seconds = time.perf_counter() - start
        if status != 200:
            self.link.add(seconds, len(body) + len(answer))
            raise _status_error(status, answer)
        try:
            response = decode_response(answer, got.get(HEADER_LENGTH))
            logits = response.outputs["logits"]
        except (ProtocolError, KeyError) as e:
            raise OffloadError(f"the server's answer is not usable: {e}", "protocol", status) from e
        # the server says how long it computed (`ponder serve` does): the link is the rest
        server_ms = response.parameters.get("server_ms")
        server_ms = float(server_ms) if isinstance(server_ms, (int, float)) else None
        self.server_ms, self.last_answer_bytes = server_ms, len(answer)
        link_s = seconds - (server_ms or 0.0) / 1e3
        self.link.add(max(link_s, 1e-6), len(body) + len(answer))
        return logits

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, Any]:
        if self.token is not None:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        try:
            return self._send(method, path, body, headers)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            if isinstance(e, (ConnectionRefusedError, TimeoutError)):
                raise self._failure(e) from e
        try:  # one reconnect: a kept-alive connection may have been closed by the server
            return self._send(method, path, body, headers)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise self._failure(e) from e

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, Any]:
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response.msg
        except BaseException:
            self.close()
            raise

    def _failure(self, e: BaseException) -> OffloadError:
        if isinstance(e, TimeoutError):
            return OffloadError(
                f"no answer from {self.host}:{self.port} within {self.timeout_s} s", "timeout"
            )
        return OffloadError(f"cannot reach {self.host}:{self.port}: {e}", "refused")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn


def _status_error(status: int, answer: bytes) -> OffloadError:
    try:
        message = json.loads(answer).get("error", "")
    except (ValueError, AttributeError):
        message = answer[:200].decode(errors="replace")
    kind = "unauthorized" if status == 401 else "server" if status >= 500 else "rejected"
    return OffloadError(f"the server answered {status}: {message}", kind, status)
