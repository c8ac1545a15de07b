"""The tables of `ponder bench serve`, in markdown (printed, and written as serve.md beside
serve.json), and the in-process measurement of payload and request bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ponder._bench.serve_load import MODEL, References, request_inputs
from ponder._core.report import write_json
from ponder.runtime import SplitBundle
from ponder.runtime._serve import encode_request, encode_response

__all__ = ["echo_report", "payload_sizes", "render", "summarize", "write_report"]


def payload_sizes(
    split: SplitBundle,
    x: np.ndarray,
    y: np.ndarray,
    refs: References,
    keeps: Sequence[float],
    codecs: Sequence[str],
) -> list[dict[str, Any]]:
    """Per keep and codec, one image a request: the payload's bytes, the whole request body
    in binary and in JSON, the answer's body both ways, and the accuracy on the images."""
    rows = []
    for keep in keeps:
        for codec in codecs:
            params = split.params(keep, codec)
            sizes: dict[str, list[int]] = {"payload": [], "binary": [], "json": []}
            for i in range(len(x)):
                payloads = split.send({"x": x[i : i + 1]}, keep, codec)
                inputs = request_inputs(payloads)
                sizes["payload"].append(sum(len(p) for p in payloads))
                for mode in ("binary", "json"):
                    body, _ = encode_request(inputs, parameters=params, binary=mode == "binary",
                                             binary_outputs=mode == "binary")  # fmt: skip
                    sizes[mode].append(len(body))
            logits = refs.cloud[keep, codec]
            answers = [len(encode_response({"logits": logits[:1]}, MODEL, model_version="1",
                                           binary=b)[0]) for b in (True, False)]  # fmt: skip
            rows.append({
                "keep": keep, "codec": codec,
                "payload_bytes": float(np.mean(sizes["payload"])),
                "binary_request_bytes": float(np.mean(sizes["binary"])),
                "json_request_bytes": float(np.mean(sizes["json"])),
                "binary_answer_bytes": answers[0], "json_answer_bytes": answers[1],
                "accuracy": float((logits.argmax(-1) == y).mean()),
            })  # fmt: skip
    return rows


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per request codec and client count: medians over the repeats, and the throughput's
    range."""
    rows = []
    for mode in ("binary", "json"):
        for clients in sorted({r["clients"] for r in runs}):
            same = [r for r in runs if r["codec_mode"] == mode and r["clients"] == clients]
            if not same:
                continue
            rps = [r["throughput_rps"] for r in same]
            rows.append({
                "codec_mode": mode, "clients": clients, "repeats": len(same),
                "throughput_rps": float(np.median(rps)), "throughput_min": min(rps),
                "throughput_max": max(rps),
                **{k: _median([r[k] for r in same]) for k in (
                    "p50_ms", "p99_ms", "server_cpu_ms_per_request", "requests_per_tail_call")},
                "requests": sum(r["requests"] for r in same),
                "errors": sum(r["errors"] for r in same),
            })  # fmt: skip
    return rows


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The whole report as markdown."""
    m, model, cfg = results["machine"], results["model"], results["config"]
    keep, codec = cfg["throughput_point"]
    speed = [
        [r["codec_mode"], r["clients"],
         f"{r['throughput_rps']:.0f} [{r['throughput_min']:.0f}-{r['throughput_max']:.0f}]",
         r["p50_ms"], r["p99_ms"], r["server_cpu_ms_per_request"], r["requests_per_tail_call"],
         r["errors"]]
        for r in results["throughput"]["summary"]
    ]  # fmt: skip
    sizes = [
        [f"{r['keep']:g}", r["codec"], r["payload_bytes"], r["binary_request_bytes"],
         r["json_request_bytes"], r["binary_answer_bytes"], r["json_answer_bytes"],
         f"{r['accuracy']:.1%}"]
        for r in results["payload"]
    ]  # fmt: skip
    parts = [
        "# ponder bench serve",
        f"{m.get('cpu', '?')}, {m.get('cores')} cores; {m['backend']}; clients: {m['clients']}. "
        f"Server options: {' '.join(cfg['server_options'])}; start-up "
        f"{results['server_startup_s']:.2f} s.",
        f"Model: {model['model']}, test accuracy {model['test_accuracy']:.2%} unsplit; split "
        f"after block {cfg['block']}; {model['images']} test images in turn.",
        "## Throughput and latency",
        f"One image a request (keep {keep:g}, {codec}); medians over {cfg['repeats']} "
        "interleaved rounds, throughput range in brackets; CPU: the server process's user + "
        f"system time per request (/proc, in {m['clock_tick_ms']:g} ms clock ticks per run: "
        "coarse for short runs); requests per tail call: server-side batching.",
        markdown(SPEED, speed),
        "## Bytes per request",
        "One image a request; means over the images. Accuracy: the split's answers on them.",
        markdown(SIZES, sizes),
        *_load_sections(results),
        *_link_sections(results.get("links")),
    ]
    return "\n\n".join(parts) + "\n"


SPEED = ["requests", "clients", "req/s", "p50 ms", "p99 ms", "server CPU ms/req",
         "requests per tail call", "errors"]  # fmt: skip
SIZES = ["keep", "codec", "payload B", "binary request B", "JSON request B", "binary answer B",
         "JSON answer B", "accuracy"]  # fmt: skip
LOAD = ["run", "requests", "cloud", "fallback", "lost", "wrong", "max logit error", "p50 ms",
        "p99 ms"]  # fmt: skip


def _load_sections(results: dict[str, Any]) -> list[str]:
    cfg, load, fault, fuzzed = (results[k] for k in ("config", "load", "fault", "fuzz"))

    def row(name: str, c: dict[str, Any]) -> list[object]:
        return [name, c["requests"], c["cloud"], c["fallback"], c["lost"], c["wrong"],
                c["max_logit_error"], c["p50_ms"], c["p99_ms"]]  # fmt: skip

    phases = [row(f"fault: {k.replace('_', ' ')}", c) for k, c in fault["phases"].items()]
    restart = fault["restart_seconds"]
    return [
        "## Load and fault tests",
        f"{cfg['clients']} devices (`Offloader`, one request after another, keep and codec in "
        f"turn) for {cfg['seconds']:g} s; then again while the server is killed (SIGKILL) "
        f"after {cfg['kill_after_s']:g} s and restarted on the same port "
        f"{cfg['outage_s']:g} s later (answering again "
        + (f"{restart:.2f} s after the kill" if restart is not None else "NEVER")
        + "). Wrong: a cloud answer that is not the split's answer in this process, or a "
        "fallback that is not the local model's.",
        markdown(LOAD, [row("load", load), row("fault: all", fault), *phases]),
        f"Offloading resumed after the restart: {'yes' if fault['resumed'] else 'NO'}; "
        f"fallback causes: {', '.join(fault['errors']) or 'none'}.",
        "## Fuzz test",
        f"{fuzzed['requests']} malformed requests, each on a fresh connection: "
        f"{'every one answered 4xx' if fuzzed['all_4xx'] else 'NOT all answered 4xx'}; "
        f"statuses {fuzzed['by_status']}; a good request afterwards: "
        f"{fuzzed['good_request_after']}.",
        markdown(["kind", "statuses"], [[k, v] for k, v in fuzzed["by_kind"].items()]),
    ]


LINK = ["Mbit/s", "RTT ms", "strategy", "accuracy", "p50 ms", "p99 ms", "offloaded",
        "bytes/request", "chosen"]  # fmt: skip


def _link_sections(links: dict[str, Any] | None) -> list[str]:
    if not links:
        return []
    rows = [
        [r["mbit_s"], r["rtt_ms"], r["strategy"] + (f" ({r['point']})" if r["point"] else ""),
         f"{r['accuracy']:.1%}", r["p50_ms"], r["p99_ms"], f"{r['offloaded']:.0%}",
         r["bytes_per_request"], ", ".join(f"{k}: {v}" for k, v in r["chosen"].items()) or None]
        for r in links["rows"]
    ]  # fmt: skip
    return [
        "## Link sweep",
        f"The device reaches the server through a shaping proxy on loopback (added round-trip "
        f"time; the bandwidth each way); {links['requests']} single images per strategy, a "
        f"fresh link estimate each time. Always local, always offloaded at the most accurate "
        f"offload point, and the OffloadPolicy under a {links['budget_ms']:g} ms budget.",
        markdown(LINK, rows),
    ]


def echo_report(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(render(results))


def write_report(out: Path, results: dict[str, Any]) -> None:
    write_json(out / "serve.json", results)
    (out / "serve.md").write_text(render(results))
