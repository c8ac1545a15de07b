"""Ray Serve scale-out: `ponder serve --ray --replicas 2` as a real process on a local
single-node Ray instance, its HTTP proxy on loopback, called through OffloadClient, tritonclient
and http.client; answers equal the split bundle run in process, both replicas answer, and
SIGTERM to its own process id stops it and every process Ray started. Plus the options and the
error without ray, which need no cluster."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_models import inputs, make

import ponder
from ponder import ConfigError, MissingDependencyError
from ponder.export import export_split
from ponder.runtime import Autoscaling, OffloadClient, ServeConfig, SplitBundle, ray_deployment

TOKEN = "ray-s3cret"
REPLICA = "x-ponder-replica"


def test_autoscaling_parses_min_max_and_refuses_nonsense():
    assert Autoscaling.parse("1:4") == Autoscaling(1, 4)
    assert Autoscaling(0, 3, 1.5).to_ray() == {
        "min_replicas": 0, "initial_replicas": 1, "max_replicas": 3,
        "target_ongoing_requests": 1.5,
    }  # fmt: skip
    for text in ("4", "a:b", "3:1", "0:0"):
        with pytest.raises(ConfigError, match=r"MIN:MAX|min_replicas"):
            Autoscaling.parse(text)
    with pytest.raises(ConfigError, match="target_ongoing_requests"):
        Autoscaling(1, 2, 0)


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'ponder\[ray\]'"):
        ray_deployment("no-bundle")


def test_deployment_options_reach_ray():
    pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'ponder[ray]'")
    config = ServeConfig("no-bundle-is-read-here", max_concurrency=3)
    fixed = ray_deployment(config, replicas=3, ray_actor_options={"num_cpus": 0.5})
    deployment = fixed._bound_deployment  # what Ray Serve will deploy
    assert deployment.num_replicas == 3 and deployment.max_ongoing_requests == 3
    assert deployment.ray_actor_options["num_cpus"] == 0.5
    scaled = ray_deployment(config, autoscaling=Autoscaling(1, 4, 2.0))._bound_deployment
    ray_config = scaled._deployment_config.autoscaling_config
    assert (ray_config.min_replicas, ray_config.max_replicas) == (1, 4)
    assert ray_config.target_ongoing_requests == 2.0


def test_the_cli_refuses_ray_options_that_do_not_fit(tmp_path):
    from click.testing import CliRunner

    from ponder._cli import main

    runner = CliRunner()
    for args, message in [
        (["--autoscale", "1:2"], "--autoscale works with --ray only"),
        (["--ray", "--autoscale", "3:1"], "min_replicas <= max_replicas"),
    ]:
        result = runner.invoke(main, ["serve", str(tmp_path), *args])
        assert result.exit_code == 1 and message in result.output, result.output


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Ray's gcs, raylet, agents, replicas)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'ponder[ray]'")
    from ponder._bench.serve_process import ServeProcess

    root = tmp_path_factory.mktemp("ray-serve")
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, keep=0.5, codec="int8"))
    export_split(model, x, root / "b", target="onnx", codecs=["int8", "fp32"], local=False,
                 echo=lambda line: None)  # fmt: skip
    # ready when it answers; Ray's start measured 18-32 s here, bounded at four minutes
    server = ServeProcess(root / "b", token=TOKEN, options=("--ray", "--replicas", "2"),
                          ready_timeout_s=240)  # fmt: skip
    ray_processes: set[int] = set()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        try:
            server.start()
            deadline = time.monotonic() + 120  # and until `serve.run` has seen both replicas
            while "Ctrl-C stops" not in server.log.read_text(errors="replace"):
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ponder serve --ray did not start: {server.log_tail()}")
                time.sleep(0.5)
            ray_processes = _descendants(server.pid)
            yield server, SplitBundle.load(root / "b"), x.numpy(), ray_processes
        finally:
            server.close()  # SIGTERM by pid, SIGKILL after 30 s
            for pid in ray_processes:  # whatever a failed stop left behind, by its own id
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _post(port, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.msg
    finally:
        conn.close()


@pytest.mark.slow
def test_two_replicas_answer_like_the_bundle_through_any_client_and_stop_cleanly(ray_server):
    from ponder.runtime._serve import HEADER_LENGTH, decode_response, encode_request

    server, bundle, x, ray_processes = ray_server
    port = server.port
    params = bundle.split["params"]
    payloads = bundle.send({"x": x}, 0.5, "int8")
    want = bundle.receive(payloads)

    client = OffloadClient(f"http://127.0.0.1:{port}", "model", token=TOKEN, timeout_s=30)
    try:
        for _ in range(3):
            np.testing.assert_allclose(
                client.infer_payloads(payloads, params), want, rtol=1e-6, atol=1e-6
            )
    finally:
        client.close()

    httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
    tokens = bundle.edge({"x": x})["hidden"]
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=30.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert triton.is_server_live() and triton.is_model_ready("model", headers=auth)
        for binary in (True, False):  # infer() writes its header length into `headers`: a copy
            tensor = httpclient.InferInput("tokens", list(tokens.shape), "FP32")
            tensor.set_data_from_numpy(tokens, binary_data=binary)
            result = triton.infer(
                "model", [tensor], headers=dict(auth), parameters=dict(params),
                outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary)],
            )  # fmt: skip
            np.testing.assert_allclose(
                result.as_numpy("logits"), bundle.run_tail(tokens), rtol=1e-6, atol=1e-6
            )
    finally:
        triton.close()

    # Ray's proxy picks a replica per request: both must answer within 40 requests
    body, length = encode_request(
        {"payload": np.frombuffer(b"".join(payloads), np.uint8),
         "payload_sizes": np.array([len(p) for p in payloads], np.int64)},
        parameters=params, binary=True, binary_outputs=True,
    )  # fmt: skip
    headers = {HEADER_LENGTH: str(length), "Authorization": f"Bearer {TOKEN}",
               "Content-Type": "application/octet-stream"}  # fmt: skip
    replicas: dict[str, int] = {}
    for _ in range(40):
        status, answer, got = _post(port, "/v2/models/model/infer", body, headers)
        assert status == 200, answer
        out = decode_response(answer, got.get(HEADER_LENGTH)).outputs["logits"]
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
        replicas[got[REPLICA]] = replicas.get(got[REPLICA], 0) + 1
        if len(replicas) == 2:
            break
    assert len(replicas) == 2, f"only {replicas} answered"
    status, answer, _ = _post(
        port, "/v2/models/model/infer", body, {**headers, "Authorization": ""}
    )
    assert status == 401 and b"bearer token" in answer  # the token reached every replica

    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log_tail()
    assert "Ray Serve and Ray stopped" in server.log.read_text()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in ray_processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [p for p in ray_processes if _alive(p)]
    assert not left, f"Ray processes left running: {left}"
