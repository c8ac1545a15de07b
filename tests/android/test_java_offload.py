"""The Java offload client of android_demo/core (dev.ponder.core.offload) against a real
`ponder serve` on 127.0.0.1: the Java tests get the payloads and decoded tokens Python sent the
same server and the logits Python's OffloadClient got back, a bearer token, and a socket that
accepts and never answers; every Java test must run and pass (none skipped)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import numpy as np
import pytest
from java_core import run_java_tests, tiny_vit_split, write_le

from ponder._bench.serve_process import ServeProcess
from ponder.runtime import SplitBundle
from ponder.runtime._offload.payload import decode_payload
from ponder.runtime._serve.client import OffloadClient

TOKEN = "java-s3cret"
JAVA_TESTS = 16  # 10 without a server (ProtocolTest, LocalServerTest) + 6 in LiveServeTest


@pytest.fixture(scope="module")
def split_bundle(tmp_path_factory):
    """The tiny ViT split after block 1 (int8 and fp32 payloads), as tests/runtime/serve's."""
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    root, x = tiny_vit_split(tmp_path_factory.mktemp("java-offload"), ["int8", "fp32"])
    return SplitBundle.load(root), x


class SilentServer:
    """A socket on 127.0.0.1 that accepts connections, reads what comes and never answers;
    its thread polls a stop flag, so it ends (and closes everything) when the test is done."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stop.is_set():  # bounded: stopped by close()
            try:
                conn, _ = self.listener.accept()
                conn.settimeout(0.1)
                self.held.append(conn)
            except TimeoutError:
                pass
            for conn in list(self.held):
                with contextlib.suppress(TimeoutError):
                    if not conn.recv(65536):  # read, and stay silent
                        self.held.remove(conn)  # the client has gone
                        conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        for conn in self.held:
            conn.close()
        self.listener.close()


def test_the_java_client_gets_what_the_python_client_gets(split_bundle, tmp_path):
    bundle, x = split_bundle
    payload_params = bundle.params(0.5, "int8")
    payloads = bundle.send({"x": x}, 0.5, "int8")
    # decoded tokens as a client without ponder's codecs sends them: padded, with their mask
    decoded = [decode_payload(p).tensors["tokens"][0] for p in payloads]
    longest = max(len(t) for t in decoded)
    tokens = np.zeros((len(decoded), longest, bundle.split["width"]), np.float32)
    mask = np.zeros((len(decoded), longest), np.int64)
    for b, t in enumerate(decoded):
        tokens[b, : len(t)], mask[b, : len(t)] = t, 1
    token_params = dict(bundle.split["params"])
    with ServeProcess(bundle.root, token=TOKEN) as server, SilentServer() as silent:
        client = OffloadClient(server.url, "model", token=TOKEN, timeout_s=30)
        try:
            payload_logits = client.infer_payloads(payloads, payload_params)
            token_logits = client.infer_tokens(tokens, token_params, mask)
        finally:
            client.close()
        np.testing.assert_allclose(payload_logits, bundle.receive(payloads), rtol=1e-6, atol=1e-6)
        for i, p in enumerate(payloads):
            (tmp_path / f"payload_{i}.bin").write_bytes(p)
        write_le(tmp_path / "payload_logits.f32", payload_logits, np.float32)
        write_le(tmp_path / "tokens.f32", tokens, np.float32)
        write_le(tmp_path / "mask.i64", mask, np.int64)
        write_le(tmp_path / "token_logits.f32", token_logits, np.float32)
        cases = {
            "payloads": [f"payload_{i}.bin" for i in range(len(payloads))],
            "payload_params": payload_params,
            "payload_logits": "payload_logits.f32",
            "logits_shape": list(payload_logits.shape),
            "tokens": "tokens.f32",
            "tokens_shape": list(tokens.shape),
            "mask": "mask.i64",
            "token_params": token_params,
            "token_logits": "token_logits.f32",
        }
        (tmp_path / "cases.json").write_text(json.dumps(cases))
        env = {
            "PONDER_JAVA_BUILD": str(tmp_path / "java-build"),
            "PONDER_TEST_SERVE_URL": server.url,
            "PONDER_TEST_SERVE_MODEL": "model",
            "PONDER_TEST_SERVE_TOKEN": TOKEN,
            "PONDER_TEST_OFFLOAD_DIR": str(tmp_path),
            "PONDER_TEST_SILENT_URL": f"http://127.0.0.1:{silent.port}",
        }
        # by class: PayloadTest, in the same package, is test_java_payload.py's
        classes = ["ProtocolTest", "LocalServerTest", "LiveServeTest"]
        selectors = [a for c in classes for a in ("--select-class", f"dev.ponder.core.offload.{c}")]
        output = run_java_tests(selectors, env, JAVA_TESTS)
    assert "theOffloaderFallsBackWhileTheServerIsAwayAndResumesWhenItIsBack() ✔" in output
