"""`ponder serve` as a real process on loopback, called over real HTTP (the standard library's
http.client): health and metadata, binary and JSON inference equal to the split bundle run in
process, and every bad request answered with a 4xx and a message while the server keeps
serving. The server is stopped by its own process id."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_models import inputs, make

import ponder
from ponder._bench.serve_process import ServeProcess, free_port
from ponder._cli import main
from ponder.export import export_split
from ponder.runtime import SplitBundle
from ponder.runtime._serve import HEADER_LENGTH, decode_response, encode_request

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    root = tmp_path_factory.mktemp("serve")
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, keep=0.5, codec="int8"))
    export_split(model, x, root / "b", target="onnx", codecs=["int8", "fp32"], local=False,
                 echo=lambda line: None)  # fmt: skip
    (root / "token").write_text(TOKEN + "\n")
    port = free_port()
    command = [
        sys.executable, "-m", "ponder._cli", "serve", str(root / "b"), "--port", str(port),
        "--token-file", str(root / "token"), "--max-body-mb", "0.05", "--max-concurrency", "2", "--timeout-s", "1",
    ]  # fmt: skip
    # its output goes to a file, not a pipe: a full pipe would block the server
    with open(root / "serve.log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, proc, root / "serve.log")
            yield port, SplitBundle.load(root / "b"), x.numpy()
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _wait_ready(port, proc, log):
    deadline = time.monotonic() + 120
    while True:  # bounded: two minutes at most for the server to come up
        try:
            if _call(port, "GET", "/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ponder serve did not start: {log.read_text()}")
        time.sleep(0.2)


def _call(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.msg  # headers, any case
    finally:
        conn.close()


def _infer(port, body, length, token=TOKEN, model="model"):
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        headers[HEADER_LENGTH] = str(length)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return _call(port, "POST", f"/v2/models/{model}/infer", body, headers)


def test_health_and_metadata_routes(server):
    port, bundle, _ = server
    assert json.loads(_call(port, "GET", "/v2/health/live")[1]) == {"live": True}
    assert "binary_tensor_data" in json.loads(_call(port, "GET", "/v2")[1])["extensions"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body, _ = _call(port, "GET", "/v2/models/model", headers=auth)
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "model"
    assert meta["parameters"]["device_sha256"] == bundle.split["params"]["device_sha256"]
    assert _call(port, "GET", "/v2/models/model/ready", headers=auth)[0] == 200
    assert _call(port, "GET", "/v2/models/model")[0] == 401  # metadata needs the token too


def test_payloads_and_decoded_tokens_give_the_in_process_answer(server):
    port, bundle, x = server
    payloads = bundle.send({"x": x}, 0.5, "int8")
    want = bundle.receive(payloads)
    data = np.frombuffer(b"".join(payloads), np.uint8)
    sizes = np.array([len(p) for p in payloads], np.int64)
    for binary in (True, False):
        body, length = encode_request(
            {"payload": data, "payload_sizes": sizes}, id="r1", binary=binary,
            parameters=bundle.split["params"], binary_outputs=binary,
        )  # fmt: skip
        status, answer, headers = _infer(port, body, length)
        assert status == 200, answer
        got = decode_response(answer, headers.get(HEADER_LENGTH))
        assert got.id == "r1" and got.model_name == "model"
        np.testing.assert_allclose(got.outputs["logits"], want, rtol=1e-6, atol=1e-6)
    tokens = bundle.edge({"x": x})["hidden"]
    body, length = encode_request({"tokens": tokens}, parameters=bundle.split["params"])
    status, answer, headers = _infer(port, body, length)
    assert status == 200, answer
    np.testing.assert_allclose(
        decode_response(answer, headers.get(HEADER_LENGTH)).outputs["logits"],
        bundle.run_tail(tokens), rtol=1e-6, atol=1e-6,
    )  # fmt: skip


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server):
    port, bundle, x = server
    payloads = bundle.send({"x": x[:1]}, 1.0, "int8")
    good = encode_request({"payload": np.frombuffer(payloads[0], np.uint8)})
    wrong_split = encode_request(
        {"payload": np.frombuffer(payloads[0], np.uint8)}, parameters={"split_block": 3}
    )
    corrupt = bytearray(good[0])
    corrupt[-5] ^= 0xFF
    cases = [
        (_infer(port, *good, token=None), 401, "bearer token"),
        (_infer(port, *good, token="wrong"), 401, "bearer token"),
        (_infer(port, *good, model="other"), 404, "unknown model"),
        (_infer(port, b"{not json", None), 400, "not valid JSON"),
        (_infer(port, good[0], len(good[0]) + 5), 400, "body has"),
        (_infer(port, bytes(corrupt), good[1]), 400, "payload refused"),
        (_infer(port, *wrong_split), 400, "split_block=3"),
        (_infer(port, *encode_request({"tokens": np.zeros((1, 2, 7), np.float32)},
                                      parameters=bundle.split["params"])), 400, "this split takes"),
        (_infer(port, *encode_request({"tokens": np.zeros((1, 2, 16), np.float32)})), 400,
         "must name the split"),
        (_infer(port, b"x" * 60000, None), 413, "cap"),
    ]  # fmt: skip
    for (status, body, _), want_status, message in cases:
        assert status == want_status, body
        assert message in json.loads(body)["error"]
    assert _infer(port, *good)[0] == 200  # still serving
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, text, _ = _call(port, "GET", "/metrics", headers=auth)
    assert status == 200 and _call(port, "GET", "/metrics")[0] == 401
    counts = {
        line.split("code=")[1].split('"')[1]: int(line.split()[-1])
        for line in text.decode().splitlines()
        if line.startswith("ponder_requests_total")
    }
    assert counts["200"] >= 1 and counts["400"] >= 6 and counts["413"] >= 1
    assert "ponder_request_seconds_count" in text.decode()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_calls_it_in_binary_and_json(server, binary):
    """A client nobody here wrote: tritonclient's HTTP client, binary tensors and JSON."""
    httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
    port, bundle, x = server
    tokens = bundle.edge({"x": x})["hidden"]
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=30.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert client.is_server_live() and client.is_model_ready("model", headers=auth)
        assert client.get_model_metadata("model", headers=auth)["name"] == "model"
        tensor = httpclient.InferInput("tokens", list(tokens.shape), "FP32")
        tensor.set_data_from_numpy(tokens, binary_data=binary)
        wanted = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer(
            "model", [tensor], outputs=[wanted], headers=auth,
            parameters=dict(bundle.split["params"]),
        )  # fmt: skip
        np.testing.assert_allclose(
            result.as_numpy("logits"), bundle.run_tail(tokens), rtol=1e-6, atol=1e-6
        )
        with pytest.raises(Exception, match="bearer token"):
            client.infer("model", [tensor], parameters=dict(bundle.split["params"]))
    finally:
        client.close()


def test_the_offload_client_answers_and_says_why_it_could_not(server):
    from ponder.runtime._serve.client import OffloadClient, OffloadError

    port, bundle, x = server
    params = bundle.split["params"]
    payloads = bundle.send({"x": x}, 0.5, "int8")
    client = OffloadClient(f"http://127.0.0.1:{port}", "model", token=TOKEN, timeout_s=30)
    try:
        for _ in range(3):  # one kept-alive connection, reused
            got = client.infer_payloads(payloads, params)
        np.testing.assert_allclose(got, bundle.receive(payloads), rtol=1e-6, atol=1e-6)
        assert client.link.samples == 3 and client.link.rtt_s > 0
        assert client.live()
        with pytest.raises(OffloadError) as caught:
            client.infer_payloads(payloads, {**params, "split_block": 0})
        assert caught.value.kind == "rejected" and caught.value.status == 400
    finally:
        client.close()
    with pytest.raises(OffloadError) as caught:
        OffloadClient(f"127.0.0.1:{port}", "model", token="wrong").infer_payloads(payloads, params)
    assert caught.value.kind == "unauthorized" and "bearer token" in str(caught.value)
    with pytest.raises(OffloadError) as caught:  # nothing listens there
        OffloadClient(f"127.0.0.1:{free_port()}", "model").infer_payloads(payloads, params)
    assert caught.value.kind == "refused"
    assert not OffloadClient(f"127.0.0.1:{free_port()}", "model").live()


def test_a_server_that_never_answers_is_a_timeout():
    import threading

    from ponder.runtime._serve.client import OffloadClient, OffloadError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)  # the thread ends within 10 s whatever happens
    port = listener.getsockname()[1]
    held = []
    thread = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        client = OffloadClient(f"127.0.0.1:{port}", "model", timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(OffloadError) as caught:
            client.infer_tokens(np.zeros((1, 2, 16), np.float32), {})
        assert caught.value.kind == "timeout" and time.monotonic() - start < 5
    finally:
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        listener.close()


def test_link_estimates_follow_transfers_and_restart_on_a_new_link():
    from ponder.runtime._serve.client import LinkEstimate

    link = LinkEstimate(alpha=0.5)
    assert link.seconds_for(1000) is None
    link.add(0.010, 100)  # a small request: the round trip
    for _ in range(5):
        link.add(0.010 + 1e6 / 50e6, 1_000_000)  # 1 MB at 50 MB/s
    assert link.rtt_s == pytest.approx(0.010)
    assert link.bandwidth_bps == pytest.approx(50e6, rel=1e-6)
    assert link.seconds_for(5_000_000) == pytest.approx(0.11, rel=1e-3)
    for _ in range(3):  # the device moved to a link ten times slower
        link.add(0.010 + 1e6 / 5e6, 1_000_000)
    assert link.changes == 1 and link.bandwidth_bps < 6e6


def test_no_request_is_lost_when_the_service_goes_and_comes_back(tmp_path):
    from ponder.runtime._serve.offload import Offloader

    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int8"))
    export_split(model, x, tmp_path / "b", target="onnx", codecs=["int8"], echo=lambda _: None)
    port = free_port()

    def serving():
        return ServeProcess(tmp_path / "b", port=port)

    device = Offloader(tmp_path / "b", f"127.0.0.1:{port}", timeout_s=5)
    local = device.local.run(x.numpy()).prediction
    np.savez(tmp_path / "x.npz", x=x.numpy(), y=local)
    run = ["run", str(tmp_path / "b"), "--input", str(tmp_path / "x.npz"), "--batch", "2",
           "--offload", f"http://127.0.0.1:{port}", "--keep", "0.5"]  # fmt: skip
    try:
        with serving():
            up = device.run({"x": x.numpy()})
            cli = CliRunner().invoke(main, run)
            assert cli.exit_code == 0, cli.output
            assert "answered by {'cloud': 3}" in cli.output
        down = device.run({"x": x.numpy()})  # the service is gone
        cli = CliRunner().invoke(main, run)
        assert cli.exit_code == 0, cli.output
        assert "answered by {'fallback': 3}" in cli.output and "accuracy 100.00%" in cli.output
        assert "fell back after: refused" in cli.output
        with serving():
            back = device.run({"x": x.numpy()})
    finally:
        device.close()
    assert up.source == "cloud" and up.error is None and up.bytes_sent > 0
    assert down.source == "fallback" and down.error.startswith("refused")
    np.testing.assert_array_equal(down.prediction, local)
    assert back.source == "cloud"  # offloading resumed
    np.testing.assert_array_equal(back.prediction, up.prediction)
    assert device.run({"x": x.numpy()}, offload=False).source == "local"


def test_the_policy_probes_decides_backs_off_and_resumes(tmp_path):
    """Offloader.policy on a bundle with offload points, against a real server: the unmeasured
    link is probed, later requests are decided from the measured link, a failed probe is
    answered locally and backs off, and once the service is back offloading resumes."""
    from ponder.runtime import PolicySpec
    from ponder.runtime._serve.offload import Offloader

    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int8"))
    labels = torch.arange(len(x)) % 3
    export_split(model, x, tmp_path / "b", target="onnx", codecs=["int8", "fp32"],
                 evaluation=({"x": x}, labels), echo=lambda _: None)  # fmt: skip
    bundle = SplitBundle.load(tmp_path / "b")
    points = bundle.offload_points
    assert [(p.keep, p.codec) for p in points] == [
        (k, c) for k in (1.0, 0.5, 0.25, 0.1) for c in ("int8", "fp32")
    ]
    for p in points:
        logits = bundle.run({"x": x.numpy()}, p.keep, p.codec)
        assert p.accuracy == pytest.approx(float((logits.argmax(-1) == labels.numpy()).mean()))
    sizes = {(p.keep, p.codec): p.payload_bytes for p in points}
    # (on this tiny model a kept-positions header outweighs the tokens it saves)
    assert sizes[1.0, "int8"] < sizes[1.0, "fp32"] and min(sizes.values()) > 0
    assert 0 <= bundle.manifest["local_accuracy"] <= 1
    port, now = free_port(), [0.0]
    device = Offloader(tmp_path / "b", f"127.0.0.1:{port}", timeout_s=5)
    policy = device.policy(PolicySpec.simple(latency_ms=1000), power_w=1.0, clock=lambda: now[0])
    local = device.local.run(x.numpy()).prediction
    try:
        first = device.run({"x": x.numpy()}, policy=policy)  # times the local model
        down = device.run({"x": x.numpy()}, policy=policy)  # nothing listens: the probe fails
        held = device.run({"x": x.numpy()}, policy=policy)
        with ServeProcess(tmp_path / "b", port=port):
            waiting = device.run({"x": x.numpy()}, policy=policy)
            now[0] += 1.5  # past the first backoff (1 s)
            probe = device.run({"x": x.numpy()}, policy=policy)
            decided = [device.run({"x": x.numpy()}, policy=policy) for _ in range(3)]
            np.savez(tmp_path / "x.npz", x=x.numpy(), y=labels.numpy())
            cli = CliRunner().invoke(main, [
                "run", str(tmp_path / "b"), "--input", str(tmp_path / "x.npz"), "--batch", "2",
                "--offload", f"http://127.0.0.1:{port}", "--latency-ms", "1000",
                "--power-w", "1", "--explain",
            ])  # fmt: skip
    finally:
        device.close()
    assert first.source == "local" and "not measured yet" in first.decision.explain()
    assert down.source == "fallback" and down.decision.probe and down.error.startswith("refused")
    np.testing.assert_array_equal(down.prediction, local)
    assert held.source == "local" and "the last offload failed (refused" in held.decision.explain()
    assert waiting.source == "local"  # still backing off, although the service is up
    assert probe.source == "cloud" and probe.decision.probe
    assert device.client.link.known and policy.server_ms is not None
    for r in decided:
        assert not r.decision.probe and len(r.decision.cloud) == len(points)
        assert "link: RTT" in r.decision.explain()
        expected = local
        if r.source == "cloud":
            p = r.decision.point
            expected = bundle.run({"x": x.numpy()}, p.keep, p.codec).argmax(-1)
        np.testing.assert_array_equal(r.prediction, expected)
    assert cli.exit_code == 0, cli.output
    assert "request 1: always full" in cli.output and "not measured yet" in cli.output
    assert "request 2: cloud keep " in cli.output and "(probe)" in cli.output
    assert "probe: the link has not been measured yet" in cli.output
    assert "policy chose: {" in cli.output and "answered by {" in cli.output


def test_a_body_that_trickles_in_is_cut_off_with_504(server):
    port, _, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (f"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + b'{"inputs": [')  # and then nothing more
        start = time.monotonic()
        answer = b""
        while b"within" not in answer and (chunk := sock.recv(4096)):  # bounded by the timeout
            answer += chunk  # headers and body may come in separate reads
    assert answer.startswith(b"HTTP/1.1 504"), answer
    assert b"not answered within the server's 1 s" in answer
    assert time.monotonic() - start < 20
    assert _call(port, "GET", "/v2/health/ready")[0] == 200  # still serving


def test_workers_serve_one_port_from_several_processes(tmp_path):
    from ponder.runtime import OffloadClient

    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, codec="int8"))
    export_split(model, x, tmp_path / "b", target="onnx", codecs=["int8"], local=False,
                 echo=lambda _: None)  # fmt: skip
    bundle = SplitBundle.load(tmp_path / "b")
    payloads = bundle.send({"x": x.numpy()}, 1.0, "int8")
    with ServeProcess(tmp_path / "b", token=TOKEN, options=("--workers", "2")) as server:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        clients = [OffloadClient(server.url, "model", token=TOKEN) for _ in range(4)]
        try:  # four connections, spread over the workers by the kernel
            got = [c.infer_payloads(payloads, bundle.params(1.0, "int8")) for c in clients]
        finally:
            for c in clients:
                c.close()
    assert len(children) >= 2  # the worker processes (uvicorn's supervisor is the parent)
    for logits in got:
        np.testing.assert_allclose(logits, bundle.receive(payloads), rtol=1e-6, atol=1e-6)
