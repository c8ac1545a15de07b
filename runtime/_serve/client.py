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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ponder._core.errors import PonderError
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


@dataclass
class LinkEstimate:
    """Round-trip time and bandwidth of the link, exponentially weighted over transfers
    (`alpha` per new sample). A sample far from the estimate three times running is taken as
    a change of link (another network): the estimate restarts from it."""

    alpha: float = 0.3
    rtt_s: float | None = None  # time of a request with (almost) no bytes
    bandwidth_bps: float | None = None  # bytes per second, both ways together
    samples: int = 0
    changes: int = 0
    _far: int = field(default=0, repr=False)

    def add(self, seconds: float, nbytes: int) -> None:
        """One transfer of `nbytes` (request and answer) that took `seconds` in all."""
        if self.rtt_s is None or nbytes < 2048:
            self.rtt_s = _ewma(self.rtt_s, seconds, self.alpha)
        payload_s = max(seconds - (self.rtt_s or 0.0), 1e-6)
        if nbytes >= 2048:
            rate = nbytes / payload_s
            if self.bandwidth_bps is not None and not 1 / 3 < rate / self.bandwidth_bps < 3:
                self._far += 1
                if self._far >= 3:  # a new link: forget the old one
                    self.bandwidth_bps, self._far = None, 0
                    self.changes += 1
            else:
                self._far = 0
            self.bandwidth_bps = _ewma(self.bandwidth_bps, rate, self.alpha)
        self.samples += 1

    def seconds_for(self, nbytes: int) -> float | None:
        """Expected time to send and answer `nbytes` (None before any measurement)."""
        if self.rtt_s is None:
            return None
        return self.rtt_s + (nbytes / self.bandwidth_bps if self.bandwidth_bps else 0.0)


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else (1 - alpha) * old + alpha * new


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
        self.link.add(time.perf_counter() - start, len(body) + len(answer))
        if status != 200:
            raise _status_error(status, answer)
        try:
            return decode_response(answer, got.get(HEADER_LENGTH)).outputs["logits"]
        except (ProtocolError, KeyError) as e:
            raise OffloadError(f"the server's answer is not usable: {e}", "protocol", status) from e

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, Any]:
        if self.token is not None:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        for attempt in (0, 1):  # one reconnect: a kept-alive connection may have been closed
            try:
                conn = self._connection()
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read(), response.msg
            except TimeoutError as e:
                self.close()
                raise OffloadError(
                    f"no answer from {self.host}:{self.port} within {self.timeout_s} s", "timeout"
                ) from e
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self.close()
                if attempt or isinstance(e, ConnectionRefusedError):
                    raise OffloadError(
                        f"cannot reach {self.host}:{self.port}: {e}", "refused"
                    ) from e
        raise AssertionError("unreachable")

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
