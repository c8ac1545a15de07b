"""Server-side batching in `ponder serve`: concurrent requests called on the app itself (ASGI,
in one event loop; no network) come back with exactly the answers they get alone, share tail
calls (counted in /metrics), are never mixed across token counts, and a bad request does not
fail the others. The batcher itself is also driven from threads with a numpy tail."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from tiny_models import inputs, make

import ponder
from ponder.export import export_split
from ponder.runtime import SplitBundle
from ponder.runtime._serve import HEADER_LENGTH, decode_response, encode_request
from ponder.runtime._serve.batching import TailBatcher

# A batch of B rows and B calls of one row run different GEMM heights in ONNX Runtime, which
# may sum in another order: equal to float32 rounding, not bit for bit.
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("starlette", reason="needs the serve extra: pip install 'ponder[serve]'")
    root = tmp_path_factory.mktemp("batching")
    model, x = make("vit"), inputs("vit", batch=8)
    ponder.convert_(model, ponder.SplitConfig(block=1, keep=0.5, codec="int8"))
    export_split(model, x, root / "b", target="onnx", codecs=["int8"], local=False,
                 echo=lambda line: None)  # fmt: skip
    return SplitBundle.load(root / "b"), x.numpy()


def _app(path, **options):
    from ponder.runtime._serve.app import ServeConfig, make_app

    return make_app(ServeConfig(path, max_concurrency=32, **options))


async def _call(app, method, path, body=b"", headers=None, gate=None):
    """One request on the ASGI app: (status, body, headers). `gate` (an asyncio.Barrier) holds
    the body back until every request of the test is inside the server."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        + [(b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    given, sent = [], []

    async def receive():
        if given:  # the body was read; a disconnect, after a bounded wait
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}
        given.append(True)
        if gate is not None:
            await asyncio.wait_for(gate.wait(), 30)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), headers


def _payload_request(split, x, keep, binary=True):
    payloads = split.send({"x": x}, keep, "int8")
    body, length = encode_request(
        {"payload": np.frombuffer(b"".join(payloads), np.uint8),
         "payload_sizes": np.array([len(p) for p in payloads], np.int64)},
        parameters=split.params(keep, "int8"), binary=binary, binary_outputs=binary,
    )  # fmt: skip
    headers = {HEADER_LENGTH: str(length)} if length is not None else {}
    return body, headers, split.receive(payloads)  # the answer alone, in process


def _concurrently(app, requests):
    async def run():
        gate = asyncio.Barrier(len(requests))
        path = "/v2/models/model/infer"
        return await asyncio.gather(
            *(_call(app, "POST", path, body, headers, gate) for body, headers in requests)
        )

    return asyncio.run(run())


def _logits(answer):
    status, body, headers = answer
    assert status == 200, body
    return decode_response(body, headers.get(HEADER_LENGTH.lower())).outputs["logits"]


def _metric(app, name):
    status, text, _ = asyncio.run(_call(app, "GET", "/metrics"))
    assert status == 200
    values = {}
    for line in text.decode().splitlines():
        if line.startswith(name):
            values[line.split()[0]] = float(line.split()[-1])
    return values


def test_concurrent_requests_share_a_tail_call_and_get_their_own_rows(bundle):
    split, x = bundle
    app = _app(split.root, max_batch=16, batch_wait_ms=5000)
    # eight requests, one or two images each, binary and JSON: 11 rows, all keep 0.5 (K=3)
    cuts = [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7), (7, 8), (2, 3), (5, 7)]
    made = [
        _payload_request(split, x[a:b], 0.5, binary=i % 2 == 0) for i, (a, b) in enumerate(cuts)
    ]
    answers = _concurrently(app, [(body, headers) for body, headers, _ in made])
    for answer, (_, _, alone) in zip(answers, made, strict=True):
        np.testing.assert_allclose(_logits(answer), alone, **TOL)
    calls = _metric(app, "ponder_serve_tail_calls_total")
    rows = _metric(app, "ponder_serve_batch_rows")
    assert sum(calls.values()) == 1  # all eight requests in one tail call
    assert rows['ponder_serve_batch_rows_sum{model="model"}'] == 11
    assert rows['ponder_serve_batch_rows_bucket{model="model",le="8"}'] == 0


def test_requests_with_different_token_counts_are_not_mixed(bundle):
    split, x = bundle
    app = _app(split.root, max_batch=16, batch_wait_ms=5000)
    keeps = [1.0, 0.5, 0.25, 1.0, 0.5, 0.25, 1.0, 0.5]  # K = 5, 3, 2 tokens of the tiny ViT's 5
    made = [_payload_request(split, x[i : i + 1], keep) for i, keep in enumerate(keeps)]
    answers = _concurrently(app, [(body, headers) for body, headers, _ in made])
    for answer, (_, _, alone) in zip(answers, made, strict=True):
        np.testing.assert_allclose(_logits(answer), alone, **TOL)
    assert sum(_metric(app, "ponder_serve_tail_calls_total").values()) == 3  # one per K


def test_a_bad_request_does_not_fail_the_others(bundle):
    split, x = bundle
    app = _app(split.root, max_batch=16, batch_wait_ms=5000)
    made = [_payload_request(split, x[i : i + 1], 0.5) for i in range(4)]
    good = [(body, headers) for body, headers, _ in made]
    corrupt = bytearray(good[0][0])
    corrupt[int(good[0][1][HEADER_LENGTH]) + 40] ^= 0xFF  # inside the payload's bytes
    narrow = encode_request(  # decoded tokens of the wrong width: refused by the tail
        {"tokens": np.zeros((1, 3, 7), np.float32)}, parameters=split.split["params"]
    )
    bad = [(bytes(corrupt), good[0][1]), (narrow[0], {HEADER_LENGTH: str(narrow[1])})]
    answers = _concurrently(app, [bad[0], *good[:2], bad[1], *good[2:]])
    assert [a[0] for a in answers] == [400, 200, 200, 400, 200, 200]
    assert "payload refused" in json.loads(answers[0][1])["error"]
    assert "this split takes" in json.loads(answers[3][1])["error"]
    for answer, (_, _, alone) in zip([*answers[1:3], *answers[4:]], made, strict=True):
        np.testing.assert_allclose(_logits(answer), alone, **TOL)


def test_batching_off_runs_each_request_alone(bundle):
    split, x = bundle
    app = _app(split.root, max_batch=1)
    made = [_payload_request(split, x[i : i + 1], 0.5) for i in range(3)]
    answers = _concurrently(app, [(body, headers) for body, headers, _ in made])
    for answer, (_, _, alone) in zip(answers, made, strict=True):
        np.testing.assert_allclose(_logits(answer), alone, rtol=0, atol=0)
    assert sum(_metric(app, "ponder_serve_tail_calls_total").values()) == 3


def _threads(calls, **options):
    """Each call (tokens, mask) from its own thread, all started together, through a
    TailBatcher(**options) that counts them in flight as the app does: (results, batcher)."""
    results = [None] * len(calls)
    start = threading.Barrier(len(calls))
    inflight = [len(calls)]
    batcher = TailBatcher(_sum_tail, inflight=lambda: inflight[0], **options)

    def one(i, tokens, mask):
        start.wait(timeout=30)
        try:
            results[i] = batcher(tokens, mask)
        except Exception as e:  # the test looks at which call raised what
            results[i] = e
        inflight[0] -= 1
        batcher.request_left()

    threads = [threading.Thread(target=one, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, batcher


def _sum_tail(tokens, mask):
    """A stand-in tail: [B, K, D] -> [B, D]; refuses any batch that holds a NaN."""
    if np.isnan(tokens).any():
        raise ValueError("a NaN in the tokens")
    return (tokens * mask[..., None]).sum(1)


def test_the_batcher_retries_a_failed_batch_one_request_at_a_time():
    rng = np.random.default_rng(0)
    calls = [(rng.normal(size=(2, 4, 3)).astype(np.float32), np.ones((2, 4), np.int64))
             for _ in range(6)]  # fmt: skip
    calls[2][0][1, 1, 1] = np.nan
    results, batcher = _threads(calls, max_batch=64, wait_s=30)
    assert isinstance(results[2], ValueError)
    for i, (tokens, mask) in enumerate(calls):
        if i != 2:
            np.testing.assert_allclose(results[i], _sum_tail(tokens, mask), rtol=1e-6)
    assert batcher.calls == 5  # the failed batch is not counted; five lone calls answered


def test_the_batcher_keeps_batches_under_max_rows_and_a_lone_call_does_not_wait():
    calls = [(np.full((2, 3, 2), i, np.float32), None) for i in range(5)]
    # the fifth call's batch cannot fill: it runs once the others have left (not after 30 s)
    results, batcher = _threads(calls, max_batch=4, wait_s=30)
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, np.full((2, 2), 3 * i))
    assert batcher.calls == 3 and batcher.rows == 10  # 2 + 2 rows, 2 + 2, and 2
    results, lone = _threads([(np.ones((1, 2, 2), np.float32), None)], max_batch=4, wait_s=30)
    np.testing.assert_array_equal(results[0], [[2.0, 2.0]])
    assert lone.calls == 1
