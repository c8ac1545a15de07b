"""The fuzz part of `ponder bench serve`: malformed inference requests of many kinds, each sent
over a raw loopback socket (so that no client library tidies them up), each to be answered
with a 4xx; counted by kind and status, then a good request must still be answered."""

from __future__ import annotations

import contextlib
import json
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ponder._bench.serve_process import LOOPBACK, ServeProcess
from ponder.runtime._serve import HEADER_LENGTH, encode_request

__all__ = ["fuzz"]

Case = tuple[bytes, dict[str, str], str]  # body, headers, the model named in the path


def fuzz(
    server: ServeProcess,
    model: str,
    good: dict[str, np.ndarray],
    params: dict[str, Any],
    width: int,
    *,
    count: int,
    max_body_bytes: int,
    seed: int = 0,
) -> dict[str, Any]:
    """`count` malformed requests, the kinds in turn, each with random details (seeded):
    statuses by kind; `all_4xx`; and whether a good request (`good`, the inputs of one offload
    request, with `params`) is answered 200 afterwards."""
    rng = np.random.default_rng(seed)
    kinds = _kinds(good, params, width, max_body_bytes, server.token, model)
    by_kind: dict[str, Counter] = {name: Counter() for name in kinds}
    for i in range(count):
        name = list(kinds)[i % len(kinds)]
        body, headers, path_model = kinds[name](rng)
        if "authorization" not in {k.lower() for k in headers} and server.token:
            headers = {**headers, "Authorization": f"Bearer {server.token}"}
        by_kind[name][_post(server.port, f"/v2/models/{path_model}/infer", body, headers)] += 1
    body, length = encode_request(good, parameters=params)
    after = _post(server.port, f"/v2/models/{model}/infer", body,
                  {HEADER_LENGTH: str(length), "Authorization": f"Bearer {server.token}"})  # fmt: skip
    statuses = Counter()
    for counter in by_kind.values():
        statuses.update(counter)
    return {
        "requests": count,
        "by_kind": {name: dict(sorted(c.items(), key=str)) for name, c in by_kind.items()},
        "by_status": dict(sorted(statuses.items(), key=str)),
        "all_4xx": all(isinstance(s, int) and 400 <= s < 500 for s in statuses),
        "good_request_after": after,
        "still_serving": after == 200,
    }


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int | str:
    """One POST on a fresh connection, written as raw bytes: the status, or what went wrong
    ("reset", "timeout", "no status line") when no HTTP answer came."""
    head = {"Host": f"{LOOPBACK}:{port}", "Connection": "close", **headers}
    if headers.get("Transfer-Encoding") == "chunked":  # no length given: 16 KB chunks
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 16384]), body[i : i + 16384])
                        for i in range(0, len(body), 16384)) + b"0\r\n\r\n"  # fmt: skip
    else:
        head["Content-Length"] = str(len(body))
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    try:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            # refused early (413), the body may not all go out; the answer is still there
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall("\r\n".join(lines).encode() + body)
            answer = b""
            while b"\r\n" not in answer and (chunk := sock.recv(4096)):  # bounded by the timeout
                answer += chunk
    except TimeoutError:
        return "timeout"
    except ConnectionError:
        return "reset"
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "no status line"


def _kinds(
    good: dict[str, np.ndarray],
    params: dict[str, Any],
    width: int,
    cap: int,
    token: str | None,
    model: str,
) -> dict[str, Callable[[np.random.Generator], Case]]:
    """Makers of malformed requests by kind; each takes the random generator. (The token
    kinds expect a server that has a token.)"""
    binary, length = encode_request(good, parameters=params, binary=True)
    text, _ = encode_request(good, parameters=params, binary=False)
    as_binary = {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}
    header = json.loads(binary[:length])

    def pick(rng: np.random.Generator, options: list) -> Any:
        return options[int(rng.integers(len(options)))]

    def retouched(change: Callable[[dict, np.random.Generator], None]):
        """The good binary request with its JSON header changed by `change`."""

        def make(rng: np.random.Generator) -> Case:
            edited = json.loads(json.dumps(header))
            change(edited, rng)
            new = json.dumps(edited).encode()
            return new + binary[length:], {HEADER_LENGTH: str(len(new))}, model

        return make

    def binary_size(h, rng):
        h["inputs"][0]["parameters"]["binary_data_size"] += pick(rng, [-3, -1, 1, 7])

    def dtype(h, rng):
        h["inputs"][0]["datatype"] = pick(rng, ["FP32", "INT64", "BYTES", "FP128", "uint8"])

    def shape(h, rng):
        h["inputs"][0]["shape"] = pick(rng, [[2, -1], [0], [1, 2, 3], [], [10**12], "x"])

    def split(h, rng):
        key, value = pick(rng, [("split_block", 99), ("selector", "x"), ("device_sha256", "0")])
        h["parameters"][key] = value

    def tokens(rng) -> Case:  # decoded tokens of a wrong width or rank
        bad = np.zeros(pick(rng, [(1, 3, width + 1), (1, 3), (2, 0, width)]), np.float32)
        body, n = encode_request({"tokens": bad}, parameters=params)
        return body, {HEADER_LENGTH: str(n)}, model

    def corrupt(rng) -> Case:
        data = bytearray(binary)
        data[length + int(rng.integers(len(binary) - length))] ^= 0xFF
        return bytes(data), as_binary, model

    def noise(rng, size: int | None = None) -> bytes:
        return rng.bytes(size or int(rng.integers(1, 4000)))

    return {
        "random bytes": lambda rng: (noise(rng), {}, model),
        "random bytes, binary header": lambda rng: (
            noise(rng),
            {HEADER_LENGTH: str(int(rng.integers(0, 99)))},
            model,
        ),
        "truncated JSON": lambda rng: (text[: int(rng.integers(1, len(text)))], {}, model),
        "header length past the body": lambda rng: (
            binary,
            {HEADER_LENGTH: str(len(binary) + int(rng.integers(1, 500)))},
            model,
        ),
        "header length not a number": lambda rng: (
            binary,
            {HEADER_LENGTH: pick(rng, ["-5", "abc", "1e3", ""])},
            model,
        ),
        "binary_data_size off": retouched(binary_size),
        "wrong datatype": retouched(dtype),
        "wrong shape": retouched(shape),
        "wrong split": retouched(split),
        "wrong tokens": tokens,
        "corrupt payload": corrupt,
        "unknown model": lambda rng: (binary, as_binary, f"{model}-{int(rng.integers(99))}"),
        "missing token": lambda rng: (binary, {**as_binary, "Authorization": ""}, model),
        "wrong token": lambda rng: (
            binary,
            {**as_binary, "Authorization": f"Bearer {token}x"},
            model,
        ),
        "oversize body": lambda rng: (noise(rng, cap + int(rng.integers(1, 5000))), {}, model),
        "oversize body, streamed": lambda rng: (
            noise(rng, cap + int(rng.integers(1, 5000))),
            {"Transfer-Encoding": "chunked"},
            model,
        ),
    }
