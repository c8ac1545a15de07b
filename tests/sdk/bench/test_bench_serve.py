"""`ponder bench serve --quick` end to end: the digits ViT split bundle served on loopback,
throughput with binary and JSON requests, bytes per codec and keep level, and the counts of
the load, fault and fuzz tests (not their timings)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from ponder._cli import main


@pytest.mark.slow
def test_quick_run_loses_nothing_answers_right_resumes_and_refuses_every_bad_request(tmp_path):
    for module in ("uvicorn", "onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[serve,onnx]')")
    result = CliRunner().invoke(main, ["bench", "serve", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "serve.json").read_text())
    assert "## Fuzz test" in (tmp_path / "serve.md").read_text()
    load, fault, fuzz = report["load"], report["fault"], report["fuzz"]
    # every request answered, and each answer the one this process computes
    assert load["requests"] > 0 and load["lost"] == 0 and load["wrong"] == 0
    assert load["cloud"] == load["requests"]  # the server was up the whole time
    assert fault["lost"] == 0 and fault["wrong"] == 0
    assert fault["phases"]["outage"]["fallback"] > 0  # answered locally while it was down
    assert fault["resumed"] and fault["phases"]["after_restart"]["cloud"] > 0
    assert "refused" in fault["errors"]  # the port was closed while it was down
    # every malformed request refused with a 4xx; the server still answers afterwards
    assert fuzz["requests"] == 51 and fuzz["all_4xx"]
    assert sum(fuzz["by_status"].values()) == 51
    assert fuzz["still_serving"] and fuzz["server_alive"]
    assert {"401", "404", "413"} <= set(fuzz["by_status"])
    # both request codecs at each concurrency, without errors
    summary = report["throughput"]["summary"]
    assert {(r["codec_mode"], r["clients"]) for r in summary} == {
        (m, c) for m in ("binary", "json") for c in (1, 4)
    }
    assert all(r["errors"] == 0 and r["requests"] == r["clients"] * 4 for r in summary)
    # bytes: JSON bodies are larger than binary ones, fewer kept tokens send fewer bytes
    sizes = {(r["keep"], r["codec"]): r for r in report["payload"]}
    assert len(sizes) == 9
    assert all(r["json_request_bytes"] > r["binary_request_bytes"] for r in sizes.values())
    assert sizes[0.25, "int8"]["payload_bytes"] < sizes[1.0, "int8"]["payload_bytes"]
    assert sizes[1.0, "int8"]["payload_bytes"] < sizes[1.0, "fp32"]["payload_bytes"]
    assert report["machine"]["cores"] >= 1 and report["config"]["quick"]
    # the link sweep: each strategy on each shaped link, every request answered
    links = report["links"]["rows"]
    assert {(r["mbit_s"], r["rtt_ms"], r["strategy"]) for r in links} == {
        (m, t, s) for m, t in ((10, 5), (1, 100)) for s in ("local", "offload", "policy")
    }
    for r in links:
        assert sum(r["sources"].values()) == 4
        if r["strategy"] == "local":
            assert r["offloaded"] == 0 and r["bytes_per_request"] == 0
        if r["strategy"] == "offload":
            assert r["offloaded"] == 1 and r["rtt_ms"] <= r["p50_ms"]  # the link's RTT is paid
        if r["strategy"] == "policy":  # the policy times the local model, then probes the link
            assert sum(r["chosen"].values()) == 4 and any("(probe)" in k for k in r["chosen"])
    assert "## Link sweep" in (tmp_path / "serve.md").read_text()
